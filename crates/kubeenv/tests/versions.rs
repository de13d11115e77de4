//! The control plane runs the Kubernetes version `KUBEENV_KUBERNETES` selects, at the patch
//! release pinned in tools/kubeenv, so a test leg cannot claim a version it did not run.

use std::path::Path;

use pause_ledger_kubeenv::{ControlPlane, Kubernetes};

/// The version `module` is pinned at in tools/kubeenv/`dir`/go.mod (`require <module> <v>`).
fn pinned(dir: &str, module: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/kubeenv").join(dir).join("go.mod");
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("require {module} ")))
        .unwrap_or_else(|| panic!("{} pins no {module}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test]
async fn serves_the_selected_and_pinned_kubernetes_version() {
    let selected = Kubernetes::from_env().unwrap();
    let cp = ControlPlane::shared().unwrap();
    assert_eq!(cp.kubernetes(), selected);
    let info = cp.admin_client().unwrap().apiserver_version().await.unwrap();
    eprintln!("KUBEENV_KUBERNETES={selected}: kube-apiserver {}", info.git_version);
    assert_eq!(format!("{}.{}", info.major, info.minor), selected.minor());
    assert_eq!(info.git_version, cp.server_version());
    assert_eq!(info.git_version, pinned(selected.binary_name(), "k8s.io/kubernetes"));
}

#[test]
fn every_pinned_version_has_its_module() {
    for k in Kubernetes::ALL {
        let pin = pinned(k.binary_name(), "k8s.io/kubernetes");
        assert!(pin.starts_with(&format!("v{}.", k.minor())), "{k}: {pin}");
    }
}
