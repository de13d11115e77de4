//! The oracle's own record of what happened: a watch (straight to the API server, admin
//! credentials) on the history's ManagedCharts, CronJobs and ledger ConfigMap, logging every
//! version with its pause value, mark, keep-paused annotation and the owners of the pause field.
//!
//! A watch delivers every version of every object in resourceVersion order, so "the version
//! just before" a write is exact — the one the writer's compare-and-set tested. When the watch
//! breaks (the API server was stopped) it resumes from the last resourceVersion; if that is too
//! old for the restarted server (410 Gone), a fresh list fills the gap and the versions it
//! brings are flagged `gap`: their predecessor is unknown, and the oracle does not judge a
//! transition across a gap (it counts them). Nothing can be written while the API server is
//! down, so a gap only hides versions written in the last moments before the stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::model::{LEDGER, Obj};
use crate::world::{self, PauseView};

/// One version of one object.
#[derive(Clone, Debug, Serialize)]
pub struct ObjVersion {
    /// Arrival order over the whole log.
    pub seq: u64,
    /// Arrival, ms since the history started.
    pub at_ms: f64,
    /// Which object.
    pub obj: Obj,
    /// A delete event (the view is the last state).
    pub deleted: bool,
    /// Came from a re-list after a broken watch: the versions before it may be missing.
    pub gap: bool,
    /// Its state.
    pub view: PauseView,
}

/// One version of the ledger ConfigMap.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerVersion {
    /// Arrival order over the whole log.
    pub seq: u64,
    /// Arrival, ms since the history started.
    pub at_ms: f64,
    /// resourceVersion.
    pub rv: u64,
    /// A delete event.
    pub deleted: bool,
    /// Came from a re-list.
    pub gap: bool,
    /// `data`.
    pub data: BTreeMap<String, String>,
}

/// Everything the watch saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Log {
    /// Object versions, in arrival order.
    pub versions: Vec<ObjVersion>,
    /// Ledger versions, in arrival order.
    pub ledgers: Vec<LedgerVersion>,
    /// Watches re-established (after a break, e.g. an outage).
    pub rewatches: u64,
    /// Re-lists after 410 Gone.
    pub relists: u64,
    /// The last arrival number handed out.
    pub next: u64,
}

impl Log {
    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The last logged version of `obj`.
    pub fn last(&self, obj: Obj) -> Option<&ObjVersion> {
        self.versions.iter().rev().find(|v| v.obj == obj)
    }

    /// The last logged ledger version.
    pub fn last_ledger(&self) -> Option<&LedgerVersion> {
        self.ledgers.last()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Charts,
    CronJobs,
    Ledger,
}

impl Stream {
    fn resource(self) -> ApiResource {
        match self {
            Stream::Charts => world::resource(Obj::Chart(0)),
            Stream::CronJobs => world::resource(Obj::CronJob),
            Stream::Ledger => world::configmaps(),
        }
    }
}

/// Builds a fresh admin client (a new one after every break: pooled connections to a stopped
/// API server are dead).
pub type MakeClient = Arc<dyn Fn() -> Option<kube::Client> + Send + Sync>;

/// The running watches of one history.
pub struct Observer {
    log: Arc<Mutex<Log>>,
    tasks: Vec<JoinHandle<()>>,
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Observer {
    /// Start watching namespace `ns`; `t0` is the history's start. Returns once every watch has
    /// listed (so nothing created afterwards can be missed).
    pub async fn start(make: MakeClient, ns: &str, t0: Instant) -> Observer {
        let log = Arc::new(Mutex::new(Log::default()));
        let mut tasks = Vec::new();
        let mut ready = Vec::new();
        for s in [Stream::Charts, Stream::CronJobs, Stream::Ledger] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(watch(make.clone(), ns.to_string(), s, log.clone(), t0, tx)));
            ready.push(rx);
        }
        for r in ready {
            let _ = tokio::time::timeout(Duration::from_secs(30), r).await;
        }
        Observer { log, tasks }
    }

    /// A copy of the log so far.
    pub fn snapshot(&self) -> Log {
        lock(&self.log).clone()
    }

    /// Wait (at most `limit`) until the log holds these versions: `objects` (resourceVersion,
    /// or `None` for absent) and the ledger's resourceVersion (`None`: absent). False on timeout.
    pub async fn catch_up(&self, objects: &BTreeMap<Obj, Option<u64>>, ledger: Option<u64>, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let done = {
                let log = lock(&self.log);
                let objs = objects.iter().all(|(o, rv)| match (log.last(*o), rv) {
                    (Some(v), Some(rv)) => !v.deleted && v.view.rv >= *rv,
                    (Some(v), None) => v.deleted,
                    (None, None) => true,
                    (None, Some(_)) => false,
                });
                let led = match (log.last_ledger(), ledger) {
                    (Some(v), Some(rv)) => !v.deleted && v.rv >= rv,
                    (Some(v), None) => v.deleted,
                    (None, None) => true,
                    (None, Some(_)) => false,
                };
                objs && led
            };
            if done {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop watching; returns the log.
    pub fn stop(self) -> Log {
        for t in &self.tasks {
            t.abort();
        }
        lock(&self.log).clone()
    }
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn record(log: &Mutex<Log>, s: Stream, obj: &DynamicObject, deleted: bool, gap: bool, t0: Instant) {
    let Ok(v) = serde_json::to_value(obj) else { return };
    let name = obj.metadata.name.as_deref().unwrap_or_default();
    let mut log = lock(log);
    let seq = log.seq();
    let at_ms = ms(t0);
    match s {
        Stream::Ledger => {
            if name != LEDGER {
                return;
            }
            let rv = world::rv_of(&obj.metadata.resource_version);
            let data = world::configmap_data(&v);
            log.ledgers.push(LedgerVersion { seq, at_ms, rv, deleted, gap, data });
        }
        Stream::Charts | Stream::CronJobs => {
            let kind = if s == Stream::Charts { "ManagedChart" } else { "CronJob" };
            let Some(o) = Obj::from_kind_name(kind, name) else { return };
            log.versions.push(ObjVersion { seq, at_ms, obj: o, deleted, gap, view: PauseView::of(o, &v) });
        }
    }
}

/// After a 410: log every listed object whose version the log does not have, and a delete for
/// every logged object the list no longer has.
fn relist(log: &Mutex<Log>, s: Stream, items: &[DynamicObject], t0: Instant, initial: bool) {
    let mut fresh = Vec::new();
    {
        let l = lock(log);
        for item in items {
            let name = item.metadata.name.as_deref().unwrap_or_default();
            let rv = world::rv_of(&item.metadata.resource_version);
            let known = match s {
                Stream::Ledger => l.last_ledger().is_some_and(|v| !v.deleted && v.rv == rv),
                _ => {
                    let kind = if s == Stream::Charts { "ManagedChart" } else { "CronJob" };
                    Obj::from_kind_name(kind, name)
                        .and_then(|o| l.last(o))
                        .is_some_and(|v| !v.deleted && v.view.rv == rv)
                }
            };
            if !known {
                fresh.push(item.clone());
            }
        }
    }
    for item in &fresh {
        record(log, s, item, false, !initial, t0);
    }
    // Deleted while the watch was down.
    let listed: Vec<String> = items.iter().filter_map(|i| i.metadata.name.clone()).collect();
    let mut l = lock(log);
    match s {
        Stream::Ledger => {
            if let Some(v) = l.last_ledger().cloned()
                && !v.deleted
                && !listed.iter().any(|n| n == LEDGER)
            {
                let seq = l.seq();
                l.ledgers.push(LedgerVersion { seq, at_ms: ms(t0), deleted: true, gap: true, ..v });
            }
        }
        _ => {
            let objs: Vec<Obj> = Obj::all()
                .into_iter()
                .filter(|o| matches!((s, o), (Stream::Charts, Obj::Chart(_)) | (Stream::CronJobs, Obj::CronJob)))
                .collect();
            for o in objs {
                if let Some(v) = l.last(o).cloned()
                    && !v.deleted
                    && !listed.iter().any(|n| n == o.name())
                {
                    let seq = l.seq();
                    l.versions.push(ObjVersion { seq, at_ms: ms(t0), deleted: true, gap: true, ..v });
                }
            }
        }
    }
}

async fn watch(
    make: MakeClient,
    ns: String,
    s: Stream,
    log: Arc<Mutex<Log>>,
    t0: Instant,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut rv: Option<String> = None;
    let mut first = true;
    let ar = s.resource();
    let fields = (s == Stream::Ledger).then(|| format!("metadata.name={LEDGER}"));
    loop {
        let Some(client) = make() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
        if rv.is_none() {
            let mut lp = ListParams::default();
            if let Some(f) = &fields {
                lp = lp.fields(f);
            }
            match api.list(&lp).await {
                Ok(list) => {
                    relist(&log, s, &list.items, t0, first);
                    if !first {
                        lock(&log).relists += 1;
                    }
                    first = false;
                    rv = list.metadata.resource_version.clone();
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let mut wp = WatchParams::default().timeout(290);
        if let Some(f) = &fields {
            wp = wp.fields(f);
        }
        let from = rv.clone().unwrap_or_default();
        match api.watch(&wp, &from).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                            rv = o.metadata.resource_version.clone();
                            record(&log, s, &o, false, false, t0);
                        }
                        Ok(WatchEvent::Deleted(o)) => {
                            rv = o.metadata.resource_version.clone();
                            record(&log, s, &o, true, false, t0);
                        }
                        Ok(WatchEvent::Bookmark(b)) => rv = Some(b.metadata.resource_version),
                        Ok(WatchEvent::Error(e)) => {
                            if e.code == 410 {
                                rv = None;
                            }
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Err(kube::Error::Api(e)) if e.code == 410 => rv = None,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        lock(&log).rewatches += 1;
    }
}

/// An object's JSON as a [`PauseView`] (for lists read outside the watch).
pub fn view_of(obj: Obj, o: &DynamicObject) -> Option<PauseView> {
    let v: Value = serde_json::to_value(o).ok()?;
    Some(PauseView::of(obj, &v))
}
