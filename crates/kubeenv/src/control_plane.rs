//! etcd + kube-apiserver on loopback ports, with our CRDs installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::binaries::{self, Kubernetes};
use crate::process::{ManagedProcess, Watchdog, log_tail};
use crate::{Error, crds, pki::Pki};

/// Prefix of our temp dirs: `<temp>/pause-ledger-kubeenv-<pid>-XXXX`.
const DIR_PREFIX: &str = "pause-ledger-kubeenv-";
/// Issuer and audience of service-account tokens, as in a kubeadm cluster.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Context (and cluster) name in the kubeconfigs we write.
pub const CONTEXT: &str = "kubeenv";
/// Startup attempts when a freshly picked port was taken by someone else in the meantime.
const ATTEMPTS: u32 = 4;
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lifetime of service-account tokens we request.
const TOKEN_SECONDS: i64 = 3600;

/// A running etcd + kube-apiserver pair (no controller-manager, no scheduler).
///
/// Without kube-controller-manager there are no default ServiceAccounts, namespaces never finish
/// terminating and no workload controllers run; tests must not rely on any of that.
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    uri: http::Uri,
    ca_pem: String,
    ca_der: Vec<u8>,
    ca_path: PathBuf,
    kubeconfig_path: PathBuf,
    kubernetes: Kubernetes,
    server_version: String,
    apiserver_bin: PathBuf,
    admin_token: String,
    apiserver_args: Vec<String>,
    apiserver_log: PathBuf,
    etcd: Mutex<Option<ManagedProcess>>,
    apiserver: Mutex<Option<ManagedProcess>>,
    watchdog: Mutex<Option<Watchdog>>,
    next_namespace: AtomicU64,
    startup: Duration,
    /// Only a fully started instance removes the dir on drop; a failed attempt leaves it to the
    /// next attempt.
    owns_dir: bool,
}

/// Files shared by all startup attempts.
struct Prepared {
    dir: PathBuf,
    kubernetes: Kubernetes,
    apiserver_bin: PathBuf,
    etcd_bin: PathBuf,
    pki: Pki,
    ca_path: PathBuf,
    admin_token: String,
    common_apiserver_args: Vec<String>,
}

impl ControlPlane {
    /// Starts a fresh etcd + kube-apiserver of the Kubernetes version `KUBEENV_KUBERNETES`
    /// selects ([`Kubernetes::from_env`]) and installs the CRDs (blocking; safe to call inside or
    /// outside a tokio runtime).
    pub fn start() -> Result<ControlPlane, Error> {
        Self::start_with(Kubernetes::from_env()?)
    }

    /// [`Self::start`] with kube-apiserver of Kubernetes `kubernetes`.
    pub fn start_with(kubernetes: Kubernetes) -> Result<ControlPlane, Error> {
        let started = Instant::now();
        let (apiserver_bin, etcd_bin) = binaries::control_plane(kubernetes)?;
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(std::env::temp_dir())
            .map_err(|e| Error::io("creating temp dir", e))?
            .keep();
        let mut watchdog = match Watchdog::start(&dir) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let result = prepare(dir.clone(), kubernetes, apiserver_bin, etcd_bin).and_then(|prepared| {
            let mut last = None;
            for attempt in 1..=ATTEMPTS {
                match Self::try_start(&prepared, &mut watchdog, attempt, started) {
                    Ok(cp) => return Ok(cp),
                    Err(e) if is_port_collision(&e) => {
                        tracing::warn!(attempt, error = %e, "port collision, retrying");
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(match last {
                Some(last) => Error::PortCollision { attempts: ATTEMPTS, last: Box::new(last) },
                None => Error::Unexpected("no startup attempt made".into()),
            })
        });
        match result {
            Ok(mut cp) => {
                cp.watchdog = Mutex::new(Some(watchdog));
                cp.owns_dir = true;
                tracing::info!(
                    version = %cp.server_version,
                    url = %cp.server_url,
                    dir = %dir.display(),
                    elapsed = ?cp.startup,
                    "control plane ready"
                );
                Ok(cp)
            }
            Err(e) => {
                // Keep the logs the error points at; the next start() removes the dir once we
                // have exited.
                watchdog.disarm();
                Err(e)
            }
        }
    }

    fn try_start(
        prepared: &Prepared,
        watchdog: &mut Watchdog,
        attempt: u32,
        started: Instant,
    ) -> Result<ControlPlane, Error> {
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let dir = &prepared.dir;
        let etcd_data = dir.join(format!("etcd-data-{attempt}"));
        let etcd_log = dir.join("etcd.log");
        let apiserver_log = dir.join("kube-apiserver.log");
        // Fresh logs per attempt, so a stale "address already in use" is not mistaken for a
        // collision of this attempt.
        for log in [&etcd_log, &apiserver_log] {
            let _ = std::fs::remove_file(log);
        }
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=kubeenv".to_string(),
            format!("--data-dir={}", etcd_data.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=kubeenv={peer_url}"),
            "--initial-cluster-state=new".to_string(),
            // Throw-away data on a 2-core box: fsync on every write slows startup and each API
            // write for no benefit; the data need not survive a crash of the machine.
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ];
        let mut etcd = ManagedProcess::spawn("etcd", &prepared.etcd_bin, &etcd_args, &etcd_log)?;
        watchdog.watch(etcd.pid());
        wait_etcd_healthy(&mut etcd, etcd_port)?;

        let mut apiserver_args = prepared.common_apiserver_args.clone();
        apiserver_args.push(format!("--etcd-servers={client_url}"));
        apiserver_args.push(format!("--secure-port={api_port}"));
        let server_url = format!("https://127.0.0.1:{api_port}");
        let uri: http::Uri =
            server_url.parse().map_err(|e| Error::Unexpected(format!("server URL {server_url}: {e}")))?;
        let mut cp = ControlPlane {
            dir: dir.clone(),
            server_url,
            uri,
            ca_pem: prepared.pki.ca_pem.clone(),
            ca_der: prepared.pki.ca_der.clone(),
            ca_path: prepared.ca_path.clone(),
            kubeconfig_path: dir.join("kubeconfig"),
            kubernetes: prepared.kubernetes,
            server_version: String::new(),
            apiserver_bin: prepared.apiserver_bin.clone(),
            admin_token: prepared.admin_token.clone(),
            apiserver_args,
            apiserver_log,
            etcd: Mutex::new(Some(etcd)),
            apiserver: Mutex::new(None),
            watchdog: Mutex::new(None),
            next_namespace: AtomicU64::new(1),
            startup: Duration::ZERO,
            owns_dir: false,
        };
        let apiserver = cp.spawn_apiserver()?;
        watchdog.watch(apiserver.pid());
        *lock(&cp.apiserver) = Some(apiserver);
        let config = cp.admin_config();
        cp.server_version = with_runtime(|rt| {
            rt.block_on(async {
                let client = kube::Client::try_from(config)?;
                let version = client.apiserver_version().await?.git_version;
                binaries::check_server_version(prepared.kubernetes, &version)?;
                crds::install(&client).await?;
                Ok::<_, Error>(version)
            })
        })??;
        cp.write_kubeconfig(&cp.kubeconfig_path, "admin", &cp.admin_token, None)?;
        cp.startup = started.elapsed();
        Ok(cp)
    }

    /// Spawns kube-apiserver with our flags and waits until `/readyz` answers 200.
    fn spawn_apiserver(&self) -> Result<ManagedProcess, Error> {
        let mut proc =
            ManagedProcess::spawn("kube-apiserver", &self.apiserver_bin, &self.apiserver_args, &self.apiserver_log)?;
        let config = self.probe_config();
        let log = self.apiserver_log.clone();
        let ready = with_runtime(|rt| wait_apiserver_ready(rt, config, &mut proc, &log))?;
        ready.map(|()| proc)
    }

    /// One shared instance per process (test binary), started on first use.
    ///
    /// Never dropped: its processes die with the process (parent-death signal) and a watchdog
    /// removes its temp dir.
    pub fn shared() -> Result<&'static ControlPlane, Error> {
        static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| ControlPlane::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Shared(e.clone()))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// File holding [`Self::ca_pem`].
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// Admin kubeconfig (user `admin`, group `system:masters`), context `kubeenv`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Folder holding this instance's kube-apiserver; when built by build.sh, also `etcd` and
    /// each `helm-<major>` built so far (see [`crate::binaries`]).
    pub fn bin_dir(&self) -> &Path {
        self.apiserver_bin.parent().unwrap_or(Path::new("/"))
    }

    /// The Kubernetes version this instance was started with.
    pub fn kubernetes(&self) -> Kubernetes {
        self.kubernetes
    }

    /// The API server's own `gitVersion` (`/version`), e.g. `v1.34.4`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// Temp dir holding data, logs, PKI and kubeconfigs; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// kube-apiserver's log file.
    pub fn apiserver_log(&self) -> &Path {
        &self.apiserver_log
    }

    /// Time from `start()` to a ready API server with CRDs established.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// Admin bearer token (`system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Client config for the admin, built directly.
    pub fn admin_config(&self) -> kube::Config {
        self.token_config(self.admin_token.clone(), "default")
    }

    /// Admin client; must be called within a tokio runtime (an error otherwise).
    pub fn admin_client(&self) -> Result<kube::Client, Error> {
        client(self.admin_config())
    }

    fn token_config(&self, token: String, namespace: &str) -> kube::Config {
        let mut config = kube::Config::new(self.uri.clone());
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(token.into());
        config.default_namespace = namespace.to_string();
        config
    }

    /// Short timeouts and no retries: a probe must fail fast and be retried by our loop.
    fn probe_config(&self) -> kube::Config {
        let mut config = self.admin_config();
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        config.default_retry = false;
        config
    }

    /// Creates a fresh namespace `<prefix>-<n>` (prefix sanitised to a DNS label) and returns its
    /// name.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let api: Api<Namespace> = Api::all(self.admin_client()?);
        let base = dns_label_prefix(prefix);
        loop {
            let n = self.next_namespace.fetch_add(1, Ordering::Relaxed);
            let name = format!("{base}-{n}");
            let ns = Namespace {
                metadata: ObjectMeta { name: Some(name.clone()), ..ObjectMeta::default() },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => return Ok(name),
                // Left over from an earlier use of the same counter value; try the next one.
                Err(kube::Error::Api(s)) if s.is_already_exists() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates ServiceAccount `ns/name` if missing and returns a TokenRequest token valid for 1h.
    pub async fn service_account_token(&self, ns: &str, name: &str) -> Result<String, Error> {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin_client()?, ns);
        let sa = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(TOKEN_SECONDS), ..TokenRequestSpec::default() },
            ..TokenRequest::default()
        };
        let answer = api.create_token_request(name, &PostParams::default(), &request).await?;
        answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unexpected(format!("TokenRequest for {ns}/{name} has no token")))
    }

    /// Client config authenticating as ServiceAccount `ns/name` (created if missing), default
    /// namespace `ns`.
    pub async fn service_account_config(&self, ns: &str, name: &str) -> Result<kube::Config, Error> {
        let token = self.service_account_token(ns, name).await?;
        Ok(self.token_config(token, ns))
    }

    /// Client for ServiceAccount `ns/name` (created if missing).
    pub async fn service_account_client(&self, ns: &str, name: &str) -> Result<kube::Client, Error> {
        client(self.service_account_config(ns, name).await?)
    }

    /// Writes a kubeconfig (context `kubeenv`, namespace `ns`) for ServiceAccount `ns/name` and
    /// returns its path.
    pub async fn service_account_kubeconfig(&self, ns: &str, name: &str) -> Result<PathBuf, Error> {
        let token = self.service_account_token(ns, name).await?;
        let path = self.dir.join("kubeconfigs").join(format!("{ns}--{name}.yaml"));
        let user = format!("system:serviceaccount:{ns}:{name}");
        self.write_kubeconfig(&path, &user, &token, Some(ns))?;
        Ok(path)
    }

    fn write_kubeconfig(&self, path: &Path, user: &str, token: &str, namespace: Option<&str>) -> Result<(), Error> {
        let mut context = serde_json::json!({ "cluster": CONTEXT, "user": user });
        if let Some(ns) = namespace {
            context["namespace"] = ns.into();
        }
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": CONTEXT,
                "cluster": {
                    "server": self.server_url,
                    "certificate-authority": self.ca_path.display().to_string(),
                },
            }],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{ "name": CONTEXT, "context": context }],
            "current-context": CONTEXT,
        });
        let yaml = serde_saphyr::to_string(&kubeconfig)?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(path, yaml).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after 10 s); etcd and its data stay. No-op when
    /// already stopped.
    ///
    /// Every user of this instance sees the outage: fault tests should use their own
    /// [`Self::start`] (or a test binary of their own) rather than [`Self::shared`]. Clients keep
    /// pooled connections to the old process; build new ones after a restart.
    pub fn stop_apiserver(&self) -> Result<(), Error> {
        let taken = lock(&self.apiserver).take();
        if let Some(mut proc) = taken {
            proc.terminate(STOP_GRACE);
        }
        Ok(())
    }

    /// Starts kube-apiserver again on the same port and waits until ready. No-op if running.
    pub fn start_apiserver(&self) -> Result<(), Error> {
        let mut slot = lock(&self.apiserver);
        if let Some(proc) = slot.as_mut()
            && proc.try_wait()?.is_none()
        {
            return Ok(());
        }
        let proc = self.spawn_apiserver()?;
        if let Some(w) = lock(&self.watchdog).as_mut() {
            w.watch(proc.pid());
        }
        *slot = Some(proc);
        Ok(())
    }

    /// [`Self::stop_apiserver`] then [`Self::start_apiserver`] (same port, same etcd data).
    pub fn restart_apiserver(&self) -> Result<(), Error> {
        self.stop_apiserver()?;
        self.start_apiserver()
    }

    /// PIDs of our etcd and (if running) kube-apiserver, in that order, for leak checks.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver].iter().filter_map(|slot| lock(slot).as_ref().map(ManagedProcess::pid)).collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut p) = lock(&self.apiserver).take() {
            p.kill();
        }
        if let Some(mut p) = lock(&self.etcd).take() {
            p.kill();
        }
        if let Some(mut w) = lock(&self.watchdog).take() {
            w.finish();
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Builds a client, refusing (instead of panicking) outside a tokio runtime.
fn client(config: kube::Config) -> Result<kube::Client, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::Unexpected("kube::Client needs a tokio runtime; call this from async code".into()));
    }
    Ok(kube::Client::try_from(config)?)
}

/// Locks ignoring poisoning: the data (process handles) stays valid after a panicking holder.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn prepare(dir: PathBuf, kubernetes: Kubernetes, apiserver_bin: PathBuf, etcd_bin: PathBuf) -> Result<Prepared, Error> {
    let pki = Pki::generate()?;
    let paths = pki.write_to(&dir.join("pki"))?;
    let admin_token = random_hex(24)?;
    let tokens = dir.join("tokens.csv");
    std::fs::write(&tokens, format!("{admin_token},admin,admin,\"system:masters\"\n"))
        .map_err(|e| Error::io(format!("writing {}", tokens.display()), e))?;
    let common_apiserver_args = vec![
        "--bind-address=127.0.0.1".to_string(),
        // Without it kube-apiserver looks for a default-route interface, which sandboxes lack.
        "--advertise-address=127.0.0.1".to_string(),
        // No Endpoints for the `kubernetes` Service: nothing here resolves it (pods get
        // KUBERNETES_SERVICE_HOST=127.0.0.1 directly), and 1.37's default (lease) reconciler
        // refuses a loopback advertise address ("may not be in the loopback range"); 1.34's
        // accepts it. One flag set for every version.
        "--endpoint-reconciler-type=none".to_string(),
        format!("--tls-cert-file={}", paths.serving_cert.display()),
        format!("--tls-private-key-file={}", paths.serving_key.display()),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--token-auth-file={}", tokens.display()),
        "--authorization-mode=RBAC".to_string(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-account-key-file={}", paths.sa_pub.display()),
        format!("--service-account-signing-key-file={}", paths.sa_key.display()),
        "--service-cluster-ip-range=10.0.0.0/24".to_string(),
        "--allow-privileged=true".to_string(),
        "--profiling=false".to_string(),
    ];
    Ok(Prepared {
        ca_path: paths.ca,
        dir,
        kubernetes,
        apiserver_bin,
        etcd_bin,
        pki,
        admin_token,
        common_apiserver_args,
    })
}

/// Three distinct free loopback ports. They are released before use, so another process may grab
/// one in between: startup retries on "address already in use".
fn free_ports() -> Result<[u16; 3], Error> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| Ok((l.local_addr()?.port(), l)))
            .map_err(|e| Error::io("picking a free port", e))
    };
    // All three listeners are held at once so the kernel hands out distinct ports.
    let (a, _la) = bind()?;
    let (b, _lb) = bind()?;
    let (c, _lc) = bind()?;
    Ok([a, b, c])
}

fn is_port_collision(e: &Error) -> bool {
    match e {
        Error::Exited { tail, .. } | Error::NotReady { tail, .. } => tail.contains("address already in use"),
        _ => false,
    }
}

fn wait_etcd_healthy(etcd: &mut ManagedProcess, port: u16) -> Result<(), Error> {
    let deadline = Instant::now() + ETCD_TIMEOUT;
    loop {
        if let Some(status) = etcd.try_wait()? {
            return Err(etcd.exited_error(status));
        }
        let last = match etcd_health(port) {
            Ok(true) => return Ok(()),
            Ok(false) => "unhealthy".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: "etcd".into(),
                timeout: ETCD_TIMEOUT,
                last,
                log: etcd.log().to_path_buf(),
                tail: log_tail(etcd.log(), 30),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /health` over plain HTTP/1.0: enough for etcd, no client library needed.
fn etcd_health(port: u16) -> std::io::Result<bool> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status_ok = answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200");
    Ok(status_ok && answer.contains("\"health\":\"true\""))
}

fn wait_apiserver_ready(
    rt: &tokio::runtime::Runtime,
    config: kube::Config,
    proc: &mut ManagedProcess,
    log: &Path,
) -> Result<(), Error> {
    let deadline = Instant::now() + APISERVER_TIMEOUT;
    let client = rt.block_on(async { kube::Client::try_from(config) })?;
    loop {
        if let Some(status) = proc.try_wait()? {
            return Err(proc.exited_error(status));
        }
        let probe = rt.block_on(async {
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            client.request_text(request).await.map_err(|e| e.to_string())
        });
        let last = match probe {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: "kube-apiserver /readyz".into(),
                timeout: APISERVER_TIMEOUT,
                last,
                log: log.to_path_buf(),
                tail: log_tail(log, 30),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `f` with a private current-thread runtime on a scoped thread, so blocking callers work
/// both inside and outside someone else's tokio runtime.
fn with_runtime<R: Send>(f: impl FnOnce(&tokio::runtime::Runtime) -> R + Send) -> Result<R, Error> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("building tokio runtime", e))?;
            Ok(f(&rt))
        });
        handle.join().map_err(|_| Error::Unexpected("control-plane helper thread panicked".into()))?
    })
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Lower-cases and replaces anything outside `[a-z0-9-]`, leaving room for `-<counter>` within
/// the 63-character DNS label limit.
fn dns_label_prefix(prefix: &str) -> String {
    let mut out = String::new();
    for c in prefix.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(40);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "ns".to_string() } else { out }
}

/// Removes temp dirs left by control planes of processes that no longer exist (SIGKILLed runs
/// whose watchdog could not finish, or failed startups that kept their logs).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != me && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::dns_label_prefix;

    #[test]
    fn prefixes_become_dns_labels() {
        assert_eq!(dns_label_prefix("rbac"), "rbac");
        assert_eq!(dns_label_prefix("Stand_In test"), "stand-in-test");
        assert_eq!(dns_label_prefix("--"), "ns");
        assert_eq!(dns_label_prefix(&"x".repeat(100)).len(), 40);
    }
}
