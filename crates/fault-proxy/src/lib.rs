//! Seeded fault-injecting reverse proxy in front of a real kube-apiserver.
//!
//! Clients speak plain HTTP/1.1 to `127.0.0.1:<port>`; the proxy forwards to the apiserver over
//! HTTPS (trusting only the given CA), passing headers (including `Authorization`) and bodies
//! through, unless the seeded fault sequence says otherwise. See [`Faults`] for the decision order.
//!
//! The proxy runs on its own thread with its own single-threaded tokio runtime, so it can be
//! started from sync tests, from inside any tokio runtime, and outlives test runtimes that shut down.

mod faults;
mod proxy;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Notify;

pub use faults::{DRAWS_PER_REQUEST, Faults, Outcome};

/// Errors from starting the proxy or writing its kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream URL is not an absolute `http(s)://host:port[/prefix]` URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    InvalidUpstream {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA bundle is not valid PEM.
    #[error("CA bundle is not valid PEM")]
    CaPem(#[source] rustls_pki_types::pem::Error),
    /// The CA bundle holds no certificate.
    #[error("CA bundle contains no CERTIFICATE block")]
    NoCaCertificate,
    /// A CA certificate could not be used as a trust anchor.
    #[error("CA certificate rejected as trust anchor")]
    CaCertificate(#[source] rustls::Error),
    /// The TLS client configuration could not be built.
    #[error("building the upstream TLS configuration failed")]
    Tls(#[source] rustls::Error),
    /// Binding the loopback listener failed.
    #[error("binding the proxy listener on 127.0.0.1 failed")]
    Bind(#[source] io::Error),
    /// The proxy's runtime or thread could not be started.
    #[error("starting the proxy runtime failed")]
    Runtime(#[source] io::Error),
    /// Writing the kubeconfig file failed.
    #[error("writing kubeconfig {path}")]
    Kubeconfig {
        /// File that could not be written.
        path: PathBuf,
        /// Underlying I/O error.
        #[source]
        source: io::Error,
    },
}

/// Snapshot of the proxy's counters since start or the last [`FaultProxy::reset_stats`].
///
/// `requests` counts every request received; `forwarded` includes those later reset
/// (`resets_after_forward`) or answered with an injected 5xx (`errors_after_forward`); `resets`
/// counts resets before forwarding only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received from clients (eligible or not).
    pub requests: u64,
    /// Requests sent upstream.
    pub forwarded: u64,
    /// Injected 5xx responses.
    pub server_errors: u64,
    /// Injected 429 responses.
    pub throttled: u64,
    /// Connections reset before forwarding.
    pub resets: u64,
    /// Connections reset after upstream had the request.
    pub resets_after_forward: u64,
    /// Requests upstream applied whose answer was replaced by an injected 500/504.
    pub errors_after_forward: u64,
    /// Requests delayed before forwarding.
    pub delayed: u64,
}

/// One monotonic counter; SeqCst because readers are other threads checking results after I/O.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn increment(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: Counter,
    forwarded: Counter,
    server_errors: Counter,
    throttled: Counter,
    resets: Counter,
    resets_after_forward: Counter,
    errors_after_forward: Counter,
    delayed: Counter,
    upstream_errors: Counter,
}

impl Counters {
    fn all(&self) -> [&Counter; 9] {
        [
            &self.requests,
            &self.forwarded,
            &self.server_errors,
            &self.throttled,
            &self.resets,
            &self.resets_after_forward,
            &self.errors_after_forward,
            &self.delayed,
            &self.upstream_errors,
        ]
    }
}

/// Fault configuration plus the position in its decision sequence.
#[derive(Debug)]
struct Decider {
    faults: Faults,
    rng: faults::SplitMix64,
}

/// State shared between the public handle and the proxy's tasks.
#[derive(Debug)]
pub(crate) struct Control {
    decider: Mutex<Decider>,
    counters: Counters,
}

impl Control {
    fn new(faults: Faults) -> Self {
        Self {
            decider: Mutex::new(Decider { rng: faults::SplitMix64::new(faults.seed), faults }),
            counters: Counters::default(),
        }
    }

    fn decider(&self) -> MutexGuard<'_, Decider> {
        // Nothing panics while holding the lock, and the state stays valid even if something did.
        self.decider.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Next outcome for a request with this path; ineligible paths consume no draws.
    pub(crate) fn decide(&self, path: &str) -> Outcome {
        let mut guard = self.decider();
        let Decider { faults, rng } = &mut *guard;
        if faults.is_eligible(path) { faults.decide(rng) } else { Outcome::Forward { delay: None } }
    }

    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.decider().faults.retry_after_secs
    }
}

/// A running proxy; stops on [`FaultProxy::stop`] or drop.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    shutdown: Arc<Notify>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Start on 127.0.0.1:0 forwarding to `upstream` (https://127.0.0.1:PORT) trusting only `ca_pem`, on a dedicated thread and runtime.
    ///
    /// Works from sync code and from inside any tokio runtime; the proxy keeps running until
    /// stopped or dropped, independent of the caller's runtime.
    pub fn start(upstream: &str, ca_pem: &str, faults: Faults) -> Result<FaultProxy, Error> {
        let upstream_base = parse_upstream(upstream)?;
        let tls = tls_config(ca_pem)?;
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();

        let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(Error::Bind)?;
        std_listener.set_nonblocking(true).map_err(Error::Bind)?;
        let addr = std_listener.local_addr().map_err(Error::Bind)?;

        // Current-thread is plenty for loopback test traffic and keeps the proxy off the 2 cores' worker pools.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("fault-proxy")
            .build()
            .map_err(Error::Runtime)?;
        let listener = {
            // Registering the listener needs the proxy runtime's reactor, not the caller's.
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(Error::Bind)?
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);

        let control = Arc::new(Control::new(faults));
        let shutdown = Arc::new(Notify::new());
        let forwarder = Arc::new(proxy::Forwarder { control: Arc::clone(&control), client, upstream_base });
        let thread = {
            let shutdown = Arc::clone(&shutdown);
            std::thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || {
                    runtime.block_on(proxy::accept_loop(listener, forwarder, shutdown));
                    // Drops open client connections (and pooled upstream ones) without waiting on them.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(Error::Runtime)?
        };
        tracing::debug!(%addr, upstream, "fault-proxy started");
        Ok(FaultProxy { addr, control, shutdown, thread: Mutex::new(Some(thread)) })
    }

    /// Base URL of the proxy, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Loopback address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the fault mix for subsequent requests and restart the decision sequence from its seed.
    pub fn set_faults(&self, faults: Faults) {
        let mut decider = self.control.decider();
        decider.rng = faults::SplitMix64::new(faults.seed);
        decider.faults = faults;
    }

    /// The fault mix currently in effect.
    pub fn faults(&self) -> Faults {
        self.control.decider().faults.clone()
    }

    /// Snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let c = &self.control.counters;
        Stats {
            requests: c.requests.get(),
            forwarded: c.forwarded.get(),
            server_errors: c.server_errors.get(),
            throttled: c.throttled.get(),
            resets: c.resets.get(),
            resets_after_forward: c.resets_after_forward.get(),
            errors_after_forward: c.errors_after_forward.get(),
            delayed: c.delayed.get(),
        }
    }

    /// Forwarded requests that failed upstream (answered 502 by the proxy); not an injected fault.
    pub fn upstream_errors(&self) -> u64 {
        self.control.counters.upstream_errors.get()
    }

    /// Zero all counters (the decision sequence continues; use `set_faults` to restart it).
    pub fn reset_stats(&self) {
        for counter in self.control.counters.all() {
            counter.clear();
        }
    }

    /// Write a kubeconfig file (in `dir`) pointing at the proxy with this bearer token; returns its path.
    ///
    /// The file is named `fault-proxy-<port>.kubeconfig` and created with mode 0600 on Unix.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> Result<PathBuf, Error> {
        let path = dir.join(format!("fault-proxy-{}.kubeconfig", self.addr.port()));
        write_private(&path, kubeconfig_yaml(&self.url(), token).as_bytes())
            .map_err(|source| Error::Kubeconfig { path: path.clone(), source })?;
        Ok(path)
    }

    /// Stop accepting and close (also on Drop).
    ///
    /// Blocks until the proxy thread has exited; open client connections are dropped.
    /// Idempotent.
    pub fn stop(&self) {
        self.shutdown.notify_one();
        let handle = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::warn!(addr = %self.addr, "fault-proxy thread panicked");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Validates the upstream URL and returns `scheme://authority[/prefix]` without a trailing slash.
fn parse_upstream(upstream: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidUpstream { url: upstream.to_owned(), reason: reason.to_owned() };
    let uri: Uri = upstream.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    let scheme = uri.scheme_str().ok_or_else(|| invalid("missing scheme"))?;
    if scheme != "https" && scheme != "http" {
        return Err(invalid("scheme must be https or http"));
    }
    let authority = uri.authority().ok_or_else(|| invalid("missing host"))?;
    if uri.query().is_some() {
        return Err(invalid("must not have a query"));
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}"))
}

/// rustls client config trusting exactly the certificates in `ca_pem`, with the ring provider.
fn tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(Error::CaPem)?).map_err(Error::CaCertificate)?;
    }
    if roots.is_empty() {
        return Err(Error::NoCaCertificate);
    }
    // An explicit provider avoids depending on (or racing to install) the process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A minimal kubeconfig; JSON string quoting is valid YAML double-quoted scalar syntax.
fn kubeconfig_yaml(server: &str, token: &str) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: fault-proxy\n  \
           cluster:\n    \
             server: {server}\n\
         users:\n\
         - name: fault-proxy\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: fault-proxy\n  \
           context:\n    \
             cluster: fault-proxy\n    \
             user: fault-proxy\n\
         current-context: fault-proxy\n",
        server = quote(server),
        token = quote(token),
    )
}

/// Writes a file readable by the owner only, since it holds a bearer token.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert_eq!(parse_upstream("https://127.0.0.1:6443").unwrap(), "https://127.0.0.1:6443");
        assert_eq!(parse_upstream("https://127.0.0.1:6443/").unwrap(), "https://127.0.0.1:6443");
        assert_eq!(parse_upstream("https://h:1/base/").unwrap(), "https://h:1/base");
        for bad in ["127.0.0.1:6443", "ftp://h:1", "/path", "https://h:1/?x=1", ""] {
            assert!(matches!(parse_upstream(bad), Err(Error::InvalidUpstream { .. })), "{bad}");
        }
    }

    #[test]
    fn ca_bundle_errors() {
        assert!(matches!(tls_config(""), Err(Error::NoCaCertificate)));
        assert!(matches!(tls_config("not pem at all"), Err(Error::NoCaCertificate)));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(tls_config(broken), Err(Error::CaPem(_))));
    }

    #[test]
    fn kubeconfig_quotes_token() {
        let yaml = kubeconfig_yaml("http://127.0.0.1:1", "a\"b\\c");
        assert!(yaml.contains("server: \"http://127.0.0.1:1\"\n"));
        assert!(yaml.contains("token: \"a\\\"b\\\\c\"\n"));
        assert!(yaml.contains("current-context: fault-proxy\n"));
    }
}
