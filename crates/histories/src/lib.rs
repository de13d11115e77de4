//! Randomized-history checker for pause-ledger (issue 12).
//!
//! pause-ledger promises two things: every object an upgrade paused is unpaused in the end,
//! and nothing a person or another tool paused is ever unpaused by it. This crate tests the
//! promise the way it breaks in practice — several actors on the same few objects at once,
//! under faults — against the real `pause-ledger` binary and a real kube-apiserver + etcd:
//!
//! - [`generate`]: a seed gives one **history**: a small world (the four ManagedCharts of
//!   Harvester's preset, one more chart, one `batch/v1` CronJob; one namespace, one ledger) and
//!   5–15 operations by the actors that share it — `record` (fresh, `--on-existing=merge`,
//!   `--on-existing=take-over`), `restore` (one or several at once, `--force`, `--settle`),
//!   `rescue`, each possibly killed (SIGKILL or SIGTERM) at a random moment and each with its
//!   own fault mix (lost answers: reset after forwarding and 5xx after commit; latency beyond
//!   the request timeout; 5xx; 429; resets); administrators (pause, unpause, re-pause with
//!   `kubectl patch`, server-side apply of `paused: true` by a GitOps tool, removing or editing
//!   the mark, the keep-paused annotation, deleting and recreating); Harvester's upgrade script
//!   (a minimal-form ledger and `kubectl patch`, or a marked ledger with its own field manager);
//!   the Rancher stand-in's status writes; and API-server outages ([`model`]).
//! - [`execute`]: runs it in a fresh namespace and records a [`execute::Trace`]: a watch log
//!   of every version of every object and of the ledger ([`observe`]), every process (exit,
//!   wall time, stderr lines with arrival times, faults injected), every administrator and
//!   script write with the resourceVersions around it, and the state after one final
//!   fault-free `restore`.
//! - [`oracle`]: judges the trace — invariants I1–I6, each rule documented there — without
//!   trusting pause-ledger's own reports.
//! - [`runner`]: runs many seeds (outage histories alone) and shrinks a failing history by
//!   delta debugging over its operations, re-running each candidate since timing varies.
//!
//! The binary (`pause-ledger-histories`) is the command line: `run --seed N`, `run --seeds
//! A..B`, `show`, `replay FILE`, `shrink`, `bench`. `tools/bench --only histories` runs
//! ≥ 2,000 histories; `cargo test -p pause-ledger-histories` runs a short fixed set.

pub mod execute;
pub mod generate;
pub mod ledger_view;
pub mod model;
pub mod observe;
pub mod oracle;
pub mod process;
pub mod runner;
pub mod summary;
pub mod world;
