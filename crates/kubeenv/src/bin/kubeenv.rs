//! `kubeenv up`: starts a local control plane for manual work and waits for Ctrl-C.

use pause_ledger_kubeenv::{ControlPlane, crds};

const USAGE: &str = "usage: kubeenv up | kubeenv crds";

fn main() -> std::process::ExitCode {
    let command = std::env::args().nth(1).unwrap_or_default();
    let result = match command.as_str() {
        "up" => up(),
        "crds" => crds::yaml().map(|yaml| print!("{yaml}")).map_err(|e| e.to_string()),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubeenv: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn up() -> Result<(), String> {
    let cp = ControlPlane::start().map_err(|e| e.to_string())?;
    println!("# Kubernetes {} control plane ready in {:?}", cp.server_version(), cp.startup_duration());
    println!("export KUBECONFIG={}", cp.kubeconfig_path().display());
    println!("export KUBEENV_BIN_DIR={}", cp.bin_dir().display());
    println!("# server {}  pids {:?}", cp.server_url(), cp.pids());
    println!("# logs   {}", cp.dir().display());
    println!("# Ctrl-C to stop");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(tokio::signal::ctrl_c()).map_err(|e| e.to_string())?;
    // Dropping `cp` stops both processes and removes the temp dir.
    drop(cp);
    Ok(())
}
