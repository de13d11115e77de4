//! pause-ledger: restores exactly what a platform upgrade paused, from the ledger it recorded.
//!
//! Data flows one way: [`ledger`] (parse, validate) → [`plan`] (order, discovery) →
//! [`engine`] (decide with [`ownership`], patch through the [`context`]) → [`outcome`]s →
//! [`verify`] and [`guard`] → [`status_doc`] written back by [`ledger_store`] → [`report`].
//! [`pause`] is the pause side (`record`). [`app`] wires the commands; [`cli`] parses.
//!
//! Where each concern lives:
//! - errors and exit codes: [`error`] (one `RunError`, one `exit()`), [`exit`] (the table);
//! - retries, backoff, budgets and deadlines: [`retry`], applied by [`context`];
//! - the API client (requests, error kinds, discovery): [`api`];
//! - the ledger ConfigMap (read, create, replace, status write): [`ledger_store`];
//! - verification: [`verify`] (propagation, readiness), [`guard`] (re-pause); what Rancher,
//!   Fleet and Harvester mean by it: [`rancher`], [`harvester`];
//! - logging, the watchdog and signals: [`runtime`].

pub mod api;
pub mod app;
pub mod bulk_read;
pub mod cli;
pub mod context;
pub mod engine;
pub mod error;
pub mod events;
pub mod exit;
pub mod guard;
pub mod harvester;
pub mod kinds;
pub mod ledger;
pub mod ledger_store;
pub mod outcome;
pub mod ownership;
pub mod pause;
pub mod plan;
pub mod preset;
pub mod rancher;
pub mod report;
pub mod retry;
pub mod runtime;
pub mod status_doc;
pub mod verify;
