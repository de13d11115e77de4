use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running the local control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// kube-apiserver/etcd/helm could not be found or built.
    #[error("control-plane binaries: {0}")]
    Binaries(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate or key generation failed.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    /// A control-plane process exited while we waited for it.
    #[error("{process} exited during startup ({status}); log {}:\n{tail}", log.display())]
    Exited {
        /// etcd or kube-apiserver.
        process: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// Last lines of the log.
        tail: String,
    },
    /// A process or resource did not become ready in time.
    #[error("{what} not ready after {timeout:?}: {last}; log {}:\n{tail}", log.display())]
    NotReady {
        /// What we waited for.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last probe result.
        last: String,
        /// The relevant log file.
        log: PathBuf,
        /// Last lines of that log.
        tail: String,
    },
    /// Every startup attempt hit a port already taken by someone else.
    #[error("ports kept colliding after {attempts} attempts; last: {last}")]
    PortCollision {
        /// How many times we tried.
        attempts: u32,
        /// The last failure.
        last: Box<Error>,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A CRD was not Established in time.
    #[error("CRD {name} not established after {timeout:?}")]
    CrdNotEstablished {
        /// CRD name.
        name: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// Serialising JSON failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Serialising YAML failed.
    #[error("YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    /// The API server answered something we cannot use.
    #[error("unexpected API answer: {0}")]
    Unexpected(String),
    /// A condition a test double waits for did not hold in time.
    #[error("{what}: not reached after {timeout:?}; last seen: {last}")]
    WaitTimedOut {
        /// What was awaited.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// The last observation.
        last: String,
    },
    /// The shared instance failed to start (the first caller's error, as text).
    #[error("shared control plane failed to start: {0}")]
    Shared(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}
