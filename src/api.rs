//! The API client layer: one client, raw JSON requests, and errors that keep what the retry
//! policy needs (status code, reason, `Retry-After`, whether the request may have been applied).
//!
//! kube-client's own retry layer is switched off (`default_retry = false`): it would retry
//! 429/503/504 up to 15 times with delays up to 1000 s, silently, outside our deadline and
//! attempt budget. Every retry happens in [`crate::retry`] instead, once, logged with its delay.
//! Requests go through `Client::send` so the response headers (`Retry-After`) stay visible.
//! This layer sends one request per call; [`crate::context::Context`] adds the retries.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::kinds::ObjectRef;

/// How to reach the API server.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Explicit kubeconfig file; else `KUBECONFIG`, `~/.kube/config`, or in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig.
    pub context: Option<String>,
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading the kubeconfig failed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No usable configuration was found.
    #[error("no Kubernetes configuration: {0}")]
    Infer(String),
    /// The client could not be built (TLS, proxy, ...).
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// Build a client with kube-client's retry layer off (see the module docs).
pub async fn build_client(opts: &ClientOptions) -> Result<Client, ConfigError> {
    let kc_opts = KubeConfigOptions { context: opts.context.clone(), ..Default::default() };
    let mut config = match (&opts.kubeconfig, &opts.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|source| ConfigError::Kubeconfig { path: path.display().to_string(), source })?;
            kube::Config::from_custom_kubeconfig(kc, &kc_opts)
                .await
                .map_err(|source| ConfigError::Kubeconfig { path: path.display().to_string(), source })?
        }
        (None, Some(_)) => {
            kube::Config::from_kubeconfig(&kc_opts).await.map_err(|e| ConfigError::Infer(e.to_string()))?
        }
        (None, None) => kube::Config::infer().await.map_err(|e| ConfigError::Infer(e.to_string()))?,
    };
    config.default_retry = false;
    nodelay_client(&config)
}

/// A client like `Client::try_from(config)`, but with TCP_NODELAY on its sockets: kube-client
/// 5 leaves Nagle's algorithm on, so the first request on each new TLS connection waits for the
/// server's delayed ACK (~40 ms on Linux). Measured (crates/bench): process start → first request
/// 47 ms → 4 ms, and a 4-chart restore ~3× faster. Auth (tokens, exec, in-cluster refresh) and the
/// base URI come from kube's own layers; timeouts are ours (`Access::request`).
fn nodelay_client(config: &kube::Config) -> Result<Client, ConfigError> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use kube::client::ConfigExt as _;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(config.connect_timeout);
    let https = config.rustls_https_connector_with_connector(http)?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, kube::client::Body>(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// The verb of a request, for messages and RBAC hints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    /// GET one object.
    Get,
    /// GET a collection.
    List,
    /// POST.
    Create,
    /// PATCH.
    Patch,
    /// Discovery GET.
    Discover,
}

impl Verb {
    /// The RBAC verb.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get | Verb::Discover => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Patch => "patch",
        }
    }
}

/// A failed API request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error status.
    #[error("{} {target}: HTTP {code} {reason}: {message}", verb.as_str())]
    Status {
        /// What we tried.
        verb: Verb,
        /// What we tried it on.
        target: String,
        /// HTTP status code.
        code: u16,
        /// Kubernetes reason (`Forbidden`, `Conflict`, ...).
        reason: String,
        /// The server's message.
        message: String,
        /// Server-requested delay (Retry-After header or details.retryAfterSeconds).
        retry_after: Option<Duration>,
    },
    /// No HTTP answer: connection refused/reset, TLS, DNS.
    #[error("{} {target}: {message}", verb.as_str())]
    Transport {
        /// What we tried.
        verb: Verb,
        /// What we tried it on.
        target: String,
        /// The transport error.
        message: String,
        /// The connection could not be made, so the request never reached the server.
        unsent: bool,
    },
    /// No answer within the per-request timeout (or before the handle's deadline).
    #[error("{} {target}: no response within {timeout:?}", verb.as_str())]
    Timeout {
        /// What we tried.
        verb: Verb,
        /// What we tried it on.
        target: String,
        /// The limit.
        timeout: Duration,
    },
    /// Not sent: the handle's deadline ([`Access::with_deadline`]) has passed.
    #[error("{} {target}: not sent: the run's deadline has passed", verb.as_str())]
    Deadline {
        /// What we tried.
        verb: Verb,
        /// What we tried it on.
        target: String,
    },
    /// A success status with a body we could not read.
    #[error("{} {target}: unreadable response: {message}", verb.as_str())]
    Decode {
        /// What we tried.
        verb: Verb,
        /// What we tried it on.
        target: String,
        /// Why.
        message: String,
    },
}

impl ApiError {
    /// HTTP status code, if the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the *object* does not exist (see [`is_object_not_found`]).
    pub fn is_object_not_found(&self) -> bool {
        is_object_not_found(self)
    }

    /// Whether RBAC refused the request (a 403 whose message says which user cannot do what),
    /// as opposed to an admission webhook or policy that denied it.
    pub fn is_rbac_forbidden(&self) -> bool {
        matches!(self, ApiError::Status { code: 403, message, .. } if is_rbac_message(message))
    }

    /// Whether a JSON Patch did not apply: a `test` failed, so the object changed under us.
    pub fn is_failed_test(&self) -> bool {
        matches!(self, ApiError::Status { code: 422, message, .. } if is_failed_test(message))
    }

    /// Whether the request got no answer after it may have reached the server: a write may
    /// have been applied although we got an error.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, ApiError::Transport { unsent: false, .. } | ApiError::Timeout { .. })
    }

    /// Whether the server could not be reached or did not answer in time: an outage, bounded
    /// by the run's deadline rather than by an attempt count ([`crate::retry`]).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Transport { .. } | ApiError::Timeout { .. })
    }

    /// What was tried, for messages (`get ConfigMap ns/name`).
    pub fn target(&self) -> &str {
        match self {
            ApiError::Status { target, .. }
            | ApiError::Transport { target, .. }
            | ApiError::Timeout { target, .. }
            | ApiError::Deadline { target, .. }
            | ApiError::Decode { target, .. } => target,
        }
    }
}

/// What a request is about: a name for messages and the URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// How messages name it, e.g. `ManagedChart.management.cattle.io fleet-local/harvester`.
    pub name: String,
    /// The URL path of the object or collection.
    pub path: String,
}

impl Target {
    /// An object whose kind was resolved through discovery.
    pub fn object(obj: &ObjectRef, r: &Resolved) -> Self {
        Self { name: obj.to_string(), path: Access::path(r, obj) }
    }

    /// A ConfigMap.
    pub fn configmap(namespace: &str, name: &str) -> Self {
        Self { name: format!("ConfigMap {namespace}/{name}"), path: configmap_path(namespace, name) }
    }
}

/// RBAC's 403 message (k8s.io/apiserver `responsewriters.forbiddenMessage`):
/// `… is forbidden: User "system:serviceaccount:ns:sa" cannot patch resource "managedcharts" …`.
/// An admission webhook's denial (`admission webhook "x" denied the request: …`) or a
/// ValidatingAdmissionPolicy's (`… denied request: …`) is a 403 too, but names no user.
fn is_rbac_message(message: &str) -> bool {
    message.contains("User \"") && message.contains(" cannot ")
}

/// The message kube-apiserver sends (422, reason Invalid, no causes) when a JSON Patch does not
/// apply to the current object: a failed `test` included, whose own text it drops.
pub const PATCH_NOT_APPLICABLE: &str = "the server rejected our request due to an error in our request";

/// Whether a 422 message means a JSON Patch did not apply (a failed `test`: the object changed
/// under us). Our patches are built from the object we read and start with a resourceVersion
/// test, so against an unchanged object every operation applies; only a change makes them fail.
pub fn is_failed_test(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m == PATCH_NOT_APPLICABLE || m.contains("test failed") || (m.contains("testing value") && m.contains("failed"))
}

/// Where an object's API lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Plural resource name, e.g. `managedcharts`.
    pub plural: String,
    /// Whether the kind is namespaced.
    pub namespaced: bool,
}

/// The access layer: a client, a request counter and a discovery cache.
#[derive(Clone)]
pub struct Access {
    client: Client,
    request_timeout: Duration,
    /// No request of this handle outlasts it (see [`Access::with_deadline`]).
    deadline: Option<Instant>,
    requests: Arc<AtomicU64>,
    discovery: Arc<Mutex<HashMap<String, Arc<Value>>>>,
}

impl Access {
    /// Wrap a client; every request is limited to `request_timeout`.
    pub fn new(client: Client, request_timeout: Duration) -> Self {
        Self {
            client,
            request_timeout,
            deadline: None,
            requests: Arc::new(AtomicU64::new(0)),
            discovery: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The same client, counter and cache, but every request ends by `deadline` (or by an
    /// earlier one this handle already has): one that would outlast it is cut short at it
    /// ([`ApiError::Timeout`]), one asked for after it is not sent ([`ApiError::Deadline`]).
    /// This is what bounds a phase in time, whatever its loops and retries do.
    pub fn with_deadline(&self, deadline: Instant) -> Self {
        let mut a = self.clone();
        a.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
        a
    }

    /// The limit on one request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The deadline of [`Access::with_deadline`], if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How many HTTP requests were sent (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The URL path of an object (or, with `name` `None`, of its collection).
    pub fn path(r: &Resolved, obj: &ObjectRef) -> String {
        object_path(&obj.api_version, &r.plural, obj.namespace.as_deref().filter(|_| r.namespaced), Some(&obj.name))
    }

    /// Send one request; map non-2xx answers to [`ApiError::Status`].
    pub async fn request(
        &self,
        verb: Verb,
        target: &str,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Value, ApiError> {
        let (status, retry_after, body) = self.send(verb, target, method, uri, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
                verb,
                target: target.to_string(),
                message: e.to_string(),
            });
        }
        Err(status_error(verb, target, status, retry_after, &body))
    }

    /// Whether the API server says it is ready (`GET /readyz`): `None` when it cannot tell
    /// (refused, unreachable). A server that is not ready yet may not serve every CRD.
    pub async fn ready(&self) -> Option<bool> {
        match self.send(Verb::Get, "/readyz", Method::GET, "/readyz", None).await {
            Ok((status, _, _)) if status.is_success() => Some(true),
            Ok((status, _, _)) if status.is_server_error() => Some(false),
            _ => None,
        }
    }

    /// Send one request and return the raw answer, whatever its status.
    async fn send(
        &self,
        verb: Verb,
        target: &str,
        method: Method,
        uri: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Option<Duration>, bytes::Bytes), ApiError> {
        let mut builder = Request::builder().method(method).uri(uri).header(header::ACCEPT, "application/json");
        let bytes = match body {
            Some((ct, b)) => {
                builder = builder.header(header::CONTENT_TYPE, ct);
                b
            }
            None => Vec::new(),
        };
        let req = builder.body(kube::client::Body::from(bytes)).map_err(|e| ApiError::Transport {
            verb,
            target: target.to_string(),
            message: format!("cannot build request: {e}"),
            unsent: true,
        })?;
        let limit = match self.deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ApiError::Deadline { verb, target: target.to_string() });
                }
                // Whole milliseconds, rounded up: the limit shows in messages.
                self.request_timeout.min(Duration::from_millis(left.as_millis() as u64 + 1))
            }
            None => self.request_timeout,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fut = async {
            let res = self.client.send(req).await.map_err(|e| ApiError::Transport {
                verb,
                target: target.to_string(),
                message: transport_message(&e),
                unsent: is_connect_error(&e),
            })?;
            let status = res.status();
            let retry_after = res
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = res.into_body().collect().await.map_err(|e| ApiError::Transport {
                verb,
                target: target.to_string(),
                message: format!("reading response: {e}"),
                unsent: false,
            })?;
            Ok::<_, ApiError>((status, retry_after, body.to_bytes()))
        };
        tokio::time::timeout(limit, fut).await.map_err(|_| ApiError::Timeout {
            verb,
            target: target.to_string(),
            timeout: limit,
        })?
    }

    /// GET an object as JSON; `Ok(None)` when the object does not exist (see [`is_object_not_found`]).
    pub async fn get(&self, target: &str, path: &str) -> Result<Option<Value>, ApiError> {
        match self.request(Verb::Get, target, Method::GET, path, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_object_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET a collection (`path` may carry a query: `?labelSelector=...&limit=...`).
    pub async fn list(&self, target: &str, path: &str) -> Result<Value, ApiError> {
        self.request(Verb::List, target, Method::GET, path, None).await
    }

    /// Apply a JSON Patch (RFC 6902); `dry_run` sends `dryRun=All`.
    pub async fn json_patch(
        &self,
        target: &str,
        path: &str,
        patch: &Value,
        field_manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let write = Write { verb: Verb::Patch, method: Method::PATCH, content_type: "application/json-patch+json" };
        self.write(write, target, path, patch, field_manager, dry_run).await
    }

    /// POST an object to a collection path.
    pub async fn create(
        &self,
        target: &str,
        collection: &str,
        obj: &Value,
        field_manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let write = Write { verb: Verb::Create, method: Method::POST, content_type: "application/json" };
        self.write(write, target, collection, obj, field_manager, dry_run).await
    }

    async fn write(
        &self,
        w: Write,
        target: &str,
        path: &str,
        body: &Value,
        field_manager: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut uri = format!("{path}?fieldManager={}", urlencode(field_manager));
        if dry_run {
            uri.push_str("&dryRun=All");
        }
        let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Decode {
            verb: w.verb,
            target: target.to_string(),
            message: e.to_string(),
        })?;
        self.request(w.verb, target, w.method, &uri, Some((w.content_type, bytes))).await
    }

    /// Resolve a kind through discovery; `Ok(None)` when the server does not serve it.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Option<Resolved>, ApiError> {
        let list = {
            let cached = self.discovery.lock().await.get(api_version).cloned();
            match cached {
                Some(v) => v,
                None => {
                    let path = if api_version.contains('/') {
                        format!("/apis/{api_version}")
                    } else {
                        format!("/api/{api_version}")
                    };
                    let v = match self.request(Verb::Discover, &path, Method::GET, &path, None).await {
                        Ok(v) => Arc::new(v),
                        // Not cached: right after an API-server restart a served group answers
                        // 404 for a moment; one answer proves nothing.
                        Err(ApiError::Status { code: 404, .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    self.discovery.lock().await.insert(api_version.to_string(), v.clone());
                    v
                }
            }
        };
        let found = list.get("resources").and_then(Value::as_array).into_iter().flatten().find(|r| {
            r.get("kind").and_then(Value::as_str) == Some(kind)
                && r.get("name").and_then(Value::as_str).is_some_and(|n| !n.contains('/'))
        });
        Ok(found.and_then(|r| {
            Some(Resolved {
                plural: r.get("name")?.as_str()?.to_string(),
                namespaced: r.get("namespaced").and_then(Value::as_bool).unwrap_or(false),
            })
        }))
    }
}

/// How a write is sent.
struct Write {
    verb: Verb,
    method: Method,
    content_type: &'static str,
}

/// A ConfigMap's `data` as strings (non-string values, which the API never returns, are skipped).
pub fn configmap_data(cm: &Value) -> std::collections::BTreeMap<String, String> {
    cm.get("data")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// Whether a 404 says the *object* does not exist: a Kubernetes Status with reason `NotFound`.
/// kube-apiserver answers a plain-text "404 page not found" instead when the *resource* is not
/// served, e.g. a CRD not yet re-registered after an API-server restart (checked against
/// v1.34.4): that is not "gone", and must not be reported as such.
pub fn is_object_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::Status { code: 404, reason, .. } if reason == "NotFound")
}

/// The URL path for a resource collection or object.
pub fn object_path(api_version: &str, plural: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut p = if api_version.contains('/') { format!("/apis/{api_version}") } else { format!("/api/{api_version}") };
    if let Some(ns) = namespace {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

/// The path of a ConfigMap.
pub fn configmap_path(namespace: &str, name: &str) -> String {
    object_path("v1", "configmaps", Some(namespace), Some(name))
}

fn status_error(verb: Verb, target: &str, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let get = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
    let retry_after = retry_after.or_else(|| {
        parsed
            .as_ref()
            .and_then(|v| v.pointer("/details/retryAfterSeconds"))
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
    });
    let message = get("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let t = text.trim();
        if t.is_empty() { status.canonical_reason().unwrap_or("").to_string() } else { t.chars().take(300).collect() }
    });
    ApiError::Status {
        verb,
        target: target.to_string(),
        code: status.as_u16(),
        reason: get("reason").unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string()),
        message,
        retry_after,
    }
}

/// Whether the connection itself failed (refused, DNS, TLS handshake): nothing was sent.
fn is_connect_error(e: &kube::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<hyper_util::client::legacy::Error>() {
            return h.is_connect();
        }
        src = s.source();
    }
    false
}

fn transport_message(e: &kube::Error) -> String {
    // The interesting part (connection refused/reset) is usually deep in the source chain.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

/// Percent-encode everything but RFC 3986 unreserved characters (query values, field managers).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            object_path("management.cattle.io/v3", "managedcharts", Some("fleet-local"), Some("harvester")),
            "/apis/management.cattle.io/v3/namespaces/fleet-local/managedcharts/harvester"
        );
        assert_eq!(object_path("v1", "nodes", None, Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
    }

    /// A client whose server never answers.
    fn silent_client() -> Client {
        let svc = tower::service_fn(|_req: Request<kube::client::Body>| async {
            futures::future::pending::<Result<http::Response<kube::client::Body>, tower::BoxError>>().await
        });
        Client::new(svc, "default")
    }

    #[tokio::test(start_paused = true)]
    async fn requests_end_by_the_handle_deadline() {
        let access = Access::new(silent_client(), Duration::from_secs(10));
        let start = Instant::now();
        let capped = access.with_deadline(start + Duration::from_secs(3));
        // Cut short at the deadline instead of waiting out the 10 s request timeout.
        let e = capped.request(Verb::Get, "x", Method::GET, "/api/v1", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Timeout { .. }), "{e}");
        assert!(start.elapsed() <= Duration::from_millis(3002), "{:?}", start.elapsed());
        // After it: not sent at all, not counted.
        let e = capped.request(Verb::Get, "x", Method::GET, "/api/v1", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Deadline { .. }), "{e}");
        assert_eq!(access.requests(), 1);
        // An earlier deadline is kept; the uncapped handle still waits its full timeout.
        assert!(matches!(
            capped.with_deadline(start + Duration::from_secs(60)).request(Verb::Get, "x", Method::GET, "/", None).await,
            Err(ApiError::Deadline { .. })
        ));
        let t = Instant::now();
        let e = access.request(Verb::Get, "x", Method::GET, "/api/v1", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Timeout { timeout, .. } if timeout == Duration::from_secs(10)), "{e}");
        assert_eq!(t.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_refused_connection_is_unsent_and_unreachable() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let access = Access::new(nodelay_client(&config).unwrap(), Duration::from_secs(5));
        let e = access.request(Verb::Get, "x", Method::GET, "/api/v1", None).await.unwrap_err();
        assert!(matches!(e, ApiError::Transport { unsent: true, .. }), "{e:?}");
        assert!(e.is_unreachable() && !e.is_ambiguous(), "{e:?}");
        assert_eq!(access.ready().await, None);
    }

    #[test]
    fn only_a_status_404_means_the_object_is_gone() {
        use crate::retry::{ErrorClass, classify};
        let gone = br#"{"kind":"Status","reason":"NotFound","message":"managedcharts.management.cattle.io \"y\" not found","details":{"name":"y"},"code":404}"#;
        let e = status_error(Verb::Get, "x", StatusCode::NOT_FOUND, None, gone);
        assert!(is_object_not_found(&e));
        assert_eq!(classify(&e), ErrorClass::NotFound);
        // What kube-apiserver v1.34 answers for a resource it does not serve (CRD not registered yet).
        let e = status_error(Verb::Get, "x", StatusCode::NOT_FOUND, None, b"404 page not found");
        assert!(!is_object_not_found(&e));
        assert_eq!(classify(&e), ErrorClass::Transient);
    }

    #[test]
    fn status_errors_keep_retry_after() {
        let body =
            br#"{"kind":"Status","reason":"TooManyRequests","message":"slow down","details":{"retryAfterSeconds":3}}"#;
        let e = status_error(Verb::Patch, "x", StatusCode::TOO_MANY_REQUESTS, None, body);
        let ApiError::Status { retry_after, reason, .. } = &e else { panic!() };
        assert_eq!(*retry_after, Some(Duration::from_secs(3)));
        assert_eq!(reason, "TooManyRequests");
        let e = status_error(Verb::Get, "x", StatusCode::BAD_GATEWAY, Some(Duration::from_secs(1)), b"upstream down");
        assert!(e.to_string().contains("upstream down"));
    }
}
