//! pause-ledger: restores exactly what a platform upgrade paused, from the ledger it recorded.
//!
//! Data flows one way: [`ledger`] (parse, validate) → [`plan`] (order, discovery) →
//! [`restore`] (decide with [`ownership`], patch through [`kube_access`], retry per [`retry`])
//! → [`report`] outcomes → [`status`] written back. [`app`] wires the commands; [`cli`] parses.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod events;
pub mod exit;
pub mod kinds;
pub mod kube_access;
pub mod ledger;
pub mod ownership;
pub mod plan;
pub mod prefetch;
pub mod preset;
pub mod record;
pub mod report;
pub mod restore;
pub mod retry;
pub mod status;
pub mod verify;
