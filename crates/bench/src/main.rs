//! pause-ledger benchmarks and fault campaign (see BENCHMARKS.md).
#![forbid(unsafe_code)]

fn main() {}
