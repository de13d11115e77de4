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
use crate::ledger::{self, DEFAULT_FIELD_MANAGER, INTENT_KEY, Intent, LEDGER_KEY, Ledger, LedgerRef, STATUS_KEY};
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
    /// The recorded set changed during the run (a record merged or took it over): a status
    /// of the old set must not stand for the new one.
    #[error("not writing {STATUS_KEY}: the ledger changed during this run; run restore again for the new ledger")]
    LedgerChanged,
}

/// Why a settled ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] Failure),
    /// A `record` run kept its intent lease renewed until the deadline.
    #[error("record run {run} is still writing the ledger")]
    RecordInProgress {
        /// The recording run.
        run: String,
    },
}

/// How often a run waiting for a `record` in its intent phase reads the ledger again.
const INTENT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

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

    /// Read the ConfigMap once no `record` run is between its intent and its confirmation.
    /// While one is (its intent lease renewed within `expiresAfterSeconds`, measured on this
    /// run's clock), read again every second until `deadline`: its entries are not paused yet,
    /// and a restore now would find them running and call the ledger done, a second record
    /// would write over the intent and let such a restore in. An intent whose lease lapsed
    /// belongs to a run that sends no more writes: the ledger is taken as it stands.
    pub async fn read_settled(&self, deadline: tokio::time::Instant) -> Result<Option<Stored>, SettleError> {
        // The intent last seen, and since when it has not changed.
        let mut seen: Option<(Intent, tokio::time::Instant)> = None;
        loop {
            let Some(stored) = self.read().await? else { return Ok(None) };
            let Some(intent) = intent_of(&stored) else { return Ok(Some(stored)) };
            let since = match &seen {
                Some((i, t)) if *i == intent => *t,
                _ => {
                    if seen.is_none() {
                        tracing::info!(record_run = %intent.run, "record is still writing this ledger; waiting for it");
                    }
                    let now = tokio::time::Instant::now();
                    seen = Some((intent.clone(), now));
                    now
                }
            };
            if since.elapsed() >= std::time::Duration::from_secs(intent.expires_after_seconds) {
                tracing::warn!(record_run = %intent.run, "the record run that wrote this ledger stopped renewing its intent: taking the ledger as it stands");
                return Ok(Some(stored));
            }
            if tokio::time::Instant::now() + INTENT_POLL >= deadline {
                return Err(SettleError::RecordInProgress { run: intent.run });
            }
            tokio::time::sleep(INTENT_POLL).await;
        }
    }

    /// Create the ConfigMap with `ledger.yaml` = `text` and the intent, if any (create-only:
    /// fails if it exists). Returns the new resourceVersion.
    pub async fn create(&self, text: &str, intent: Option<&Intent>) -> Result<String, Failure> {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.at.name, "namespace": self.at.namespace,
                "labels": {"app.kubernetes.io/managed-by": "pause-ledger"}},
            "data": data(text, intent),
        });
        let collection = Target {
            name: self.target.name.clone(),
            path: object_path("v1", "configmaps", Some(&self.at.namespace), None),
        };
        let answer = self.ctx.create_in(&self.ctx.budget(), &collection, &cm, DEFAULT_FIELD_MANAGER).await?;
        Ok(resource_version(&answer))
    }

    /// Replace the recorded set with `ledger.yaml` = `text` and the intent, if any, if the
    /// ConfigMap is still at `rv`; minimal-form keys and a status of the previous set are
    /// dropped. Returns the new resourceVersion.
    pub async fn replace(&self, rv: &str, text: &str, intent: Option<&Intent>) -> Result<String, Failure> {
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "replace", "path": "/data", "value": data(text, intent)},
        ]);
        let answer = self.ctx.patch_in(&self.ctx.budget(), &self.target, &patch, DEFAULT_FIELD_MANAGER, false).await?;
        Ok(resource_version(&answer))
    }

    /// Renew a record run's intent: `current` → `next`, only if the ConfigMap still holds
    /// `current` (one attempt; the caller renews periodically). A lost answer is resolved by
    /// reading back.
    pub async fn renew(&self, current: &Intent, next: &Intent) -> Result<(), Failure> {
        let patch = json!([
            {"op": "test", "path": INTENT_POINTER, "value": current.to_yaml()},
            {"op": "replace", "path": INTENT_POINTER, "value": next.to_yaml()},
        ]);
        let sent = self
            .ctx
            .access()
            .json_patch(&self.target.name, &self.target.path, &patch, DEFAULT_FIELD_MANAGER, false)
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.is_ambiguous() || e.is_failed_test() => {
                // Applied with its answer lost, or really changed by someone else: look.
                let now = self.read().await?;
                match now.as_ref().map(intent_of) {
                    Some(Some(i)) if &i == next => Ok(()),
                    _ => Err(Failure::once(e)),
                }
            }
            Err(e) => Err(Failure::once(e)),
        }
    }

    /// Confirm a record run: `ledger.yaml` = `text` and the intent removed, only if the
    /// ConfigMap still holds `current`. Returns the new resourceVersion.
    pub async fn confirm(&self, current: &Intent, text: &str) -> Result<String, Failure> {
        let patch = json!([
            {"op": "test", "path": INTENT_POINTER, "value": current.to_yaml()},
            {"op": "replace", "path": format!("/data/{LEDGER_KEY}"), "value": text},
            {"op": "remove", "path": INTENT_POINTER},
        ]);
        match self.ctx.patch_in(&self.ctx.budget(), &self.target, &patch, DEFAULT_FIELD_MANAGER, false).await {
            Ok(answer) => Ok(resource_version(&answer)),
            Err(f) if f.ambiguous && f.class() == ErrorClass::TestFailed => {
                // Our confirmation was applied and its answer lost: the retry found no intent.
                match self.read().await? {
                    Some(s) if intent_of(&s).is_none() && s.data.get(LEDGER_KEY).map(String::as_str) == Some(text) => {
                        Ok(s.resource_version)
                    }
                    _ => Err(f),
                }
            }
            Err(f) => Err(f),
        }
    }

    /// Merge this run's results into the status and write it, compare-and-set.
    pub async fn write_status(&self, ledger: &Ledger, run: RunResult<'_>) -> Result<StatusDoc, StatusError> {
        let budget = self.ctx.budget();
        loop {
            let cm = self.ctx.get_in(&budget, &self.target).await?.ok_or(StatusError::Gone)?;
            let rv = resource_version(&cm);
            let data = cm.get("data");
            let current = ledger::digest_of(|k| data.and_then(|d| d.get(k)).and_then(Value::as_str));
            if current != ledger.digest {
                return Err(StatusError::LedgerChanged);
            }
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

/// JSON Pointer to the intent key.
const INTENT_POINTER: &str = "/data/intent.yaml";

/// The data of a ledger ConfigMap: the recorded set and the intent, if any.
fn data(text: &str, intent: Option<&Intent>) -> Value {
    let mut d = json!({LEDGER_KEY: text});
    if let Some(i) = intent {
        d[INTENT_KEY] = json!(i.to_yaml());
    }
    d
}

/// The intent a stored ledger carries, if readable.
fn intent_of(s: &Stored) -> Option<Intent> {
    s.data.get(INTENT_KEY).and_then(|t| serde_saphyr::from_str(t).ok())
}

/// The ConfigMap's resourceVersion.
fn resource_version(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string()
}
