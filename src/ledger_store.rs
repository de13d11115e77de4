//! The ledger ConfigMap's one owner: reading it, creating it, replacing the recorded set
//! compare-and-set, and writing the restore status next to it. Everything that touches the
//! ConfigMap goes through here; the format is [`crate::ledger`], the status document
//! [`crate::status_doc`].
//!
//! Writes are compare-and-set on the ConfigMap's resourceVersion (a JSON Patch starting with
//! a `test`); on a lost race the status is read again and merged, so concurrent runs each add
//! their results and none is lost.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::api::{Target, configmap_data, object_path};
use crate::context::Context;
use crate::ledger::{self, DEFAULT_FIELD_MANAGER, LEDGER_KEY, Ledger, LedgerRef, STATUS_KEY};
use crate::retry::{ErrorClass, Failure};
use crate::status_doc::{self, EncodeError, RunResult, StatusDoc};

/// The ledger ConfigMap as read.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its data, without the status key.
    pub data: BTreeMap<String, String>,
    /// The status document's text, if any.
    pub status: Option<String>,
    /// metadata.uid (for Events).
    pub uid: Option<String>,
    /// metadata.resourceVersion (for compare-and-set).
    pub resource_version: String,
}

/// Errors writing the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API refused or failed.
    #[error("writing {STATUS_KEY}: {0}")]
    Api(#[from] Failure),
    /// The ledger ConfigMap disappeared.
    #[error("writing {STATUS_KEY}: the ledger ConfigMap is gone")]
    Gone,
    /// The status could not be encoded within the size limit.
    #[error("writing {STATUS_KEY}: {0}")]
    Encode(#[from] EncodeError),
}

/// Reads and writes one ledger ConfigMap.
pub struct LedgerStore {
    ctx: Context,
    at: LedgerRef,
    target: Target,
}

impl LedgerStore {
    /// The store of ConfigMap `at`, reached through `ctx`.
    pub fn new(ctx: &Context, at: &LedgerRef) -> Self {
        Self { ctx: ctx.clone(), at: at.clone(), target: Target::configmap(&at.namespace, &at.name) }
    }

    /// Where the ledger lives.
    pub fn at(&self) -> &LedgerRef {
        &self.at
    }

    /// Read the ConfigMap; `Ok(None)` when it does not exist.
    pub async fn read(&self) -> Result<Option<Stored>, Failure> {
        let cm = self.ctx.get(&self.target).await?;
        Ok(cm.map(|cm| {
            let mut data = configmap_data(&cm);
            let status = data.remove(STATUS_KEY);
            Stored {
                data,
                status,
                uid: cm.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string),
                resource_version: resource_version(&cm),
            }
        }))
    }

    /// Create the ConfigMap with `ledger.yaml` = `text` (create-only: fails if it exists).
    /// Returns the new resourceVersion.
    pub async fn create(&self, text: &str) -> Result<String, Failure> {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.at.name, "namespace": self.at.namespace,
                "labels": {"app.kubernetes.io/managed-by": "pause-ledger"}},
            "data": {LEDGER_KEY: text},
        });
        let collection = Target {
            name: self.target.name.clone(),
            path: object_path("v1", "configmaps", Some(&self.at.namespace), None),
        };
        let answer = self.ctx.create_in(&self.ctx.budget(), &collection, &cm, DEFAULT_FIELD_MANAGER).await?;
        Ok(resource_version(&answer))
    }

    /// Replace the recorded set with `ledger.yaml` = `text`, if the ConfigMap is still at
    /// `rv`; minimal-form keys and a status of the previous set are dropped. Returns the new
    /// resourceVersion.
    pub async fn replace(&self, rv: &str, text: &str) -> Result<String, Failure> {
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/data", "value": {LEDGER_KEY: text}},
        ]);
        let answer = self.ctx.patch_in(&self.ctx.budget(), &self.target, &patch, DEFAULT_FIELD_MANAGER, false).await?;
        Ok(resource_version(&answer))
    }

    /// Merge this run's results into the status and write it, compare-and-set.
    pub async fn write_status(&self, ledger: &Ledger, run: RunResult<'_>) -> Result<StatusDoc, StatusError> {
        let budget = self.ctx.budget();
        loop {
            let cm = self.ctx.get_in(&budget, &self.target).await?.ok_or(StatusError::Gone)?;
            let rv = resource_version(&cm);
            let prev = status_doc::parse(cm.pointer(&format!("/data/{STATUS_KEY}")).and_then(Value::as_str));
            let room = status_doc::room(&cm);
            let has_data = cm.get("data").is_some_and(|d| !d.is_null());
            // The ConfigMap carries the whole ledger text: not held while the status is built.
            drop(cm);
            if let Some(p) = prev.as_ref().filter(|p| p.written_by(run.id)) {
                // Our earlier attempt was applied; its answer was lost. Counting it again would
                // double `runs` (and overwrite a concurrent run's merge with a stale one).
                tracing::debug!("the status already carries this run's write");
                return Ok(p.clone());
            }
            let mut doc = status_doc::merge(prev, ledger, &run);
            let (text, compact) = status_doc::encode(&mut doc, room)?;
            if compact {
                tracing::info!(
                    room,
                    bytes = text.len(),
                    "status written in the compact form (the full form does not fit)"
                );
            }
            let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
            if !has_data {
                ops.push(json!({"op": "add", "path": "/data", "value": {}}));
            }
            ops.push(json!({"op": "add", "path": format!("/data/{STATUS_KEY}"), "value": text}));
            let patch = Value::Array(ops);
            match self.ctx.patch_in(&budget, &self.target, &patch, DEFAULT_FIELD_MANAGER, false).await {
                Ok(_) => return Ok(doc),
                Err(f) if f.class() == ErrorClass::TestFailed && budget.take() => {
                    tracing::debug!("ledger ConfigMap changed while writing status; merging again");
                }
                Err(f) => return Err(f.into()),
            }
        }
    }
}

/// The ConfigMap's resourceVersion.
fn resource_version(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Parse the recorded set of a stored ledger.
pub fn parse(stored: &Stored) -> Result<Ledger, ledger::LedgerError> {
    ledger::parse_configmap_data(&stored.data)
}
