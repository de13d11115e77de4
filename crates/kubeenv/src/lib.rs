//! Throw-away Kubernetes control plane (etcd + kube-apiserver, no controllers) for pause-ledger's
//! integration tests, demo and benchmarks, plus the CRDs and the test doubles they need: a
//! Rancher/Fleet stand-in ([`rancher`]), Harvester's Upgrade objects ([`harvester`]) and a
//! kubelet/Job-controller stand-in for hook Jobs ([`hook_runner`]).

pub mod binaries;
pub mod control_plane;
pub mod crds;
mod error;
pub mod harvester;
pub mod hook_runner;
pub mod pki;
pub mod process;
pub mod rancher;

pub use binaries::{Helm, Kubernetes};
pub use control_plane::ControlPlane;
pub use error::Error;
pub use hook_runner::HookRunner;
pub use rancher::{Mode, RancherStandIn};
