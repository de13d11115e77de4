//! Runs a fault proxy in front of an apiserver until Ctrl-C, for manual checks and benchmarks.
//!
//! `cargo run -p pause-ledger-fault-proxy --example fault_proxy -- UPSTREAM CA.pem [key=value ...]`
//! with keys seed, error, throttle, retry_after, reset, reset_after, error_after, latency, latency_min_ms,
//! latency_max_ms, filter, and token=T dir=D to write a kubeconfig.

use std::path::PathBuf;
use std::time::Duration;

use pause_ledger_fault_proxy::{FaultProxy, Faults};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(upstream), Some(ca_path)) = (args.next(), args.next()) else {
        return Err("usage: fault_proxy UPSTREAM CA.pem [key=value ...]".into());
    };
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| format!("{ca_path}: {e}"))?;
    let mut faults = Faults::default();
    let (mut token, mut dir) = (None, None);
    for arg in args {
        let (key, value) = arg.split_once('=').ok_or(format!("expected key=value: {arg}"))?;
        let rate = || value.parse::<f64>().map_err(|e| format!("{key}: {e}"));
        let int = || value.parse::<u64>().map_err(|e| format!("{key}: {e}"));
        match key {
            "seed" => faults.seed = int()?,
            "error" => faults.server_error_rate = rate()?,
            "throttle" => faults.throttle_rate = rate()?,
            "retry_after" => faults.retry_after_secs = int()?,
            "reset" => faults.reset_rate = rate()?,
            "reset_after" => faults.reset_after_forward_rate = rate()?,
            "error_after" => faults.error_after_forward_rate = rate()?,
            "latency" => faults.latency_rate = rate()?,
            "latency_min_ms" => faults.latency_min = Duration::from_millis(int()?),
            "latency_max_ms" => faults.latency_max = Duration::from_millis(int()?),
            "filter" => faults.path_filter = Some(value.to_owned()),
            "token" => token = Some(value.to_owned()),
            "dir" => dir = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown key {key}")),
        }
    }
    let proxy = FaultProxy::start(&upstream, &ca_pem, faults).map_err(|e| e.to_string())?;
    println!("proxy {}", proxy.url());
    if let Some(token) = token {
        let dir = dir.unwrap_or_else(std::env::temp_dir);
        let path = proxy.write_kubeconfig(&dir, &token).map_err(|e| e.to_string())?;
        println!("export KUBECONFIG={}", path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(tokio::signal::ctrl_c()).map_err(|e| e.to_string())?;
    println!("{:?} upstream_errors={}", proxy.stats(), proxy.upstream_errors());
    Ok(())
}
