//! End-to-end tests: client → fault-proxy (HTTP) → local HTTPS upstream with an rcgen CA.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pause_ledger_fault_proxy::{Error, FaultProxy, Faults, Outcome, Stats};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// HTTPS upstream standing in for the apiserver; records requests and echoes them as JSON.
struct Upstream {
    url: String,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "fault-proxy-test-ca");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let recorder = Arc::clone(&recorder);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| echo(Arc::clone(&recorder), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Upstream { url: format!("https://{addr}"), ca_pem: ca.pem(), seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn echo(recorder: Arc<Mutex<Vec<Seen>>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let seen = Seen {
        method: parts.method.clone(),
        path_and_query: parts.uri.path_and_query().map(|pq| pq.to_string()).unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    recorder.lock().unwrap().push(seen.clone());
    let reply = serde_json::json!({
        "method": seen.method.as_str(),
        "pathAndQuery": seen.path_and_query,
        "authorization": parts.headers.get("authorization").and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    });
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .header("content-type", "application/json")
        .header("x-upstream", "yes")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap())
}

/// Result of one request through the proxy on a fresh connection.
type Reply = Result<(StatusCode, HeaderMap, Bytes), hyper::Error>;

async fn send(proxy: &FaultProxy, method: Method, path: &str, body: &str) -> Reply {
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", proxy.addr().to_string())
        .header("authorization", "Bearer test-token")
        .header("content-type", "application/merge-patch+json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok((parts.status, parts.headers, body.collect().await?.to_bytes()))
}

async fn get(proxy: &FaultProxy, path: &str) -> Reply {
    send(proxy, Method::GET, path, "").await
}

fn json(bytes: &Bytes) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Outcome as a client observes it, for comparing sequences.
fn observed(reply: &Reply) -> String {
    match reply {
        Ok((status, _, _)) => status.as_u16().to_string(),
        Err(_) => "reset".to_owned(),
    }
}

#[tokio::test]
async fn passes_requests_and_responses_through() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, Faults::default()).unwrap();
    assert_eq!(proxy.url(), format!("http://{}", proxy.addr()));

    let path = "/apis/management.cattle.io/v3/namespaces/fleet-local/managedcharts/harvester?fieldManager=pause-ledger";
    let (status, headers, body) = send(&proxy, Method::PATCH, path, r#"{"spec":{"paused":false}}"#).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["x-upstream"], "yes");
    assert_eq!(headers["content-type"], "application/json");
    let body = json(&body);
    assert_eq!(body["method"], "PATCH");
    assert_eq!(body["pathAndQuery"], path);
    assert_eq!(body["authorization"], "Bearer test-token");
    assert_eq!(body["body"], r#"{"spec":{"paused":false}}"#);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::PATCH);
    assert_eq!(seen[0].headers["content-type"], "application/merge-patch+json");
    assert_eq!(seen[0].headers["host"], upstream.url.trim_start_matches("https://"));
    assert_eq!(seen[0].body, r#"{"spec":{"paused":false}}"#);
    assert_eq!(proxy.stats(), Stats { requests: 1, forwarded: 1, ..Stats::default() });
}

#[tokio::test]
async fn server_errors_are_kubernetes_status_and_not_forwarded() {
    let upstream = Upstream::start().await;
    let faults = Faults { seed: 11, server_error_rate: 1.0, ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let mut codes = Vec::new();
    for _ in 0..12 {
        let (status, headers, body) = get(&proxy, "/api/v1/namespaces").await.unwrap();
        assert!([500, 502, 503, 504].contains(&status.as_u16()), "{status}");
        assert_eq!(headers["content-type"], "application/json");
        let body = json(&body);
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["code"], status.as_u16());
        assert_eq!(body["message"], "injected by fault-proxy");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(body["reason"], "ServiceUnavailable");
        }
        codes.push(status.as_u16());
    }
    assert!(codes.contains(&503));
    assert!(upstream.seen().is_empty());
    assert_eq!(proxy.stats(), Stats { requests: 12, server_errors: 12, ..Stats::default() });
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let upstream = Upstream::start().await;
    let faults = Faults { throttle_rate: 1.0, retry_after_secs: 7, ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let (status, headers, body) = get(&proxy, "/api/v1/configmaps").await.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "7");
    let body = json(&body);
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(body["code"], 429);
    assert_eq!(body["details"]["retryAfterSeconds"], 7);
    assert!(upstream.seen().is_empty());
    assert_eq!(proxy.stats(), Stats { requests: 1, throttled: 1, ..Stats::default() });
}

#[tokio::test]
async fn reset_drops_the_connection_before_forwarding() {
    let upstream = Upstream::start().await;
    let faults = Faults { reset_rate: 1.0, ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let reply = send(&proxy, Method::PATCH, "/apis/x/managedcharts/a", "{}").await;
    assert!(reply.is_err(), "expected a connection error, got {reply:?}");
    assert!(upstream.seen().is_empty());
    assert_eq!(proxy.stats(), Stats { requests: 1, resets: 1, ..Stats::default() });
}

#[tokio::test]
async fn reset_after_forward_applies_upstream_but_loses_the_response() {
    let upstream = Upstream::start().await;
    let faults = Faults { reset_after_forward_rate: 1.0, ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let reply = send(&proxy, Method::PATCH, "/apis/x/managedcharts/a", r#"{"spec":{"paused":false}}"#).await;
    assert!(reply.is_err(), "expected a connection error, got {reply:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, r#"{"spec":{"paused":false}}"#);
    assert_eq!(seen[0].headers["authorization"], "Bearer test-token");
    assert_eq!(proxy.stats(), Stats { requests: 1, forwarded: 1, resets_after_forward: 1, ..Stats::default() });
}

#[tokio::test]
async fn error_after_forward_applies_upstream_but_answers_5xx() {
    let upstream = Upstream::start().await;
    let faults = Faults { seed: 3, error_after_forward_rate: 1.0, ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults.clone()).unwrap();
    let expected: Vec<u16> = faults
        .plan(6)
        .into_iter()
        .map(|o| match o {
            Outcome::ForwardThenError { code, .. } => code,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    for (i, code) in expected.iter().enumerate() {
        let body = format!(r#"{{"spec":{{"paused":{}}}}}"#, i % 2 == 0);
        let (status, _, reply) = send(&proxy, Method::PATCH, "/apis/x/managedcharts/a", &body).await.unwrap();
        assert_eq!(status.as_u16(), *code);
        let reply = json(&reply);
        assert_eq!(reply["kind"], "Status");
        assert_eq!(reply["code"], *code);
        assert!(reply["message"].as_str().unwrap().contains("after forwarding"), "{reply}");
        // Upstream saw (and, being the apiserver, would have applied) the request.
        assert_eq!(upstream.seen()[i].body, body);
    }
    assert!(expected.contains(&500) || expected.contains(&504));
    assert_eq!(proxy.stats(), Stats { requests: 6, forwarded: 6, errors_after_forward: 6, ..Stats::default() });
}

#[tokio::test]
async fn latency_delays_forwarding() {
    let upstream = Upstream::start().await;
    let faults = Faults {
        latency_rate: 1.0,
        latency_min: Duration::from_millis(300),
        latency_max: Duration::from_millis(300),
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let started = Instant::now();
    let (status, _, _) = get(&proxy, "/version").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(upstream.seen().len(), 1);
    assert_eq!(proxy.stats(), Stats { requests: 1, forwarded: 1, delayed: 1, ..Stats::default() });

    proxy.set_faults(Faults::default());
    let started = Instant::now();
    get(&proxy, "/version").await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn same_seed_gives_same_sequence_and_matches_plan() {
    let upstream = Upstream::start().await;
    let faults = Faults {
        seed: 42,
        server_error_rate: 0.15,
        throttle_rate: 0.15,
        reset_rate: 0.15,
        reset_after_forward_rate: 0.15,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults.clone()).unwrap();
    let n = 40;
    let mut runs = Vec::new();
    let mut stats = Vec::new();
    for _ in 0..2 {
        proxy.set_faults(faults.clone());
        proxy.reset_stats();
        let mut sequence = Vec::new();
        for _ in 0..n {
            sequence.push(observed(&get(&proxy, "/apis/x/managedcharts").await));
        }
        runs.push(sequence);
        stats.push(proxy.stats());
    }
    assert_eq!(runs[0], runs[1]);
    assert_eq!(stats[0], stats[1]);

    let expected: Vec<String> = faults
        .plan(n)
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Forward { .. } => "201".to_owned(),
            Outcome::ServerError { code } => code.to_string(),
            Outcome::Throttle => "429".to_owned(),
            Outcome::Reset | Outcome::ForwardThenReset { .. } => "reset".to_owned(),
            Outcome::ForwardThenError { code, .. } => code.to_string(),
        })
        .collect();
    assert_eq!(runs[0], expected);
    // The mix is actually mixed, so the comparison above means something.
    for kind in ["201", "429", "reset"] {
        assert!(expected.iter().any(|o| o == kind), "{kind} missing from {expected:?}");
    }

    let s = &stats[0];
    assert_eq!(s.requests, n as u64);
    assert_eq!(s.requests, s.server_errors + s.throttled + s.resets + s.forwarded);
    assert_eq!(upstream.seen().len() as u64, 2 * s.forwarded);

    let other = Faults { seed: 43, ..faults };
    assert_ne!(other.plan(n), Faults { seed: 42, ..other.clone() }.plan(n));
}

#[tokio::test]
async fn path_filter_limits_faults() {
    let upstream = Upstream::start().await;
    let faults = Faults { server_error_rate: 1.0, path_filter: Some("managedcharts".to_owned()), ..Faults::default() };
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, faults).unwrap();
    let ledger = get(&proxy, "/api/v1/namespaces/harvester-system/configmaps/ledger").await.unwrap();
    assert_eq!(ledger.0, StatusCode::CREATED);
    let chart =
        get(&proxy, "/apis/management.cattle.io/v3/namespaces/fleet-local/managedcharts/harvester").await.unwrap();
    assert!(chart.0.is_server_error());
    assert_eq!(proxy.stats(), Stats { requests: 2, forwarded: 1, server_errors: 1, ..Stats::default() });
}

#[tokio::test]
async fn upstream_failure_is_a_502_status() {
    // Nothing listens on the upstream port; pick one by binding and dropping.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(&format!("https://127.0.0.1:{port}"), &upstream.ca_pem, Faults::default()).unwrap();
    let (status, _, body) = get(&proxy, "/version").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(json(&body)["kind"], "Status");
    assert_eq!(proxy.upstream_errors(), 1);
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_refused() {
    let upstream = Upstream::start().await;
    let other_ca = Upstream::start().await.ca_pem;
    let proxy = FaultProxy::start(&upstream.url, &other_ca, Faults::default()).unwrap();
    let (status, _, body) = get(&proxy, "/version").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(json(&body)["message"].as_str().unwrap().contains("certificate"), "{body:?}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn stop_closes_the_listener() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(&upstream.url, &upstream.ca_pem, Faults::default()).unwrap();
    let addr: SocketAddr = proxy.addr();
    get(&proxy, "/version").await.unwrap();
    proxy.stop();
    proxy.stop();
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn works_from_sync_code_and_resets_with_rst() {
    // No runtime here at all: the proxy brings its own. Upstream is never contacted.
    let faults = Faults { reset_rate: 1.0, ..Faults::default() };
    let ca = CertifiedIssuer::self_signed(
        {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        },
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let proxy = FaultProxy::start("https://127.0.0.1:1", &ca.pem(), faults).unwrap();
    let mut tcp = std::net::TcpStream::connect(proxy.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /api HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let err = tcp.read_to_end(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    assert!(buf.is_empty());

    proxy.set_faults(Faults { throttle_rate: 1.0, retry_after_secs: 2, ..Faults::default() });
    let mut tcp = std::net::TcpStream::connect(proxy.addr()).unwrap();
    tcp.write_all(b"GET /api HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 2\r\n"), "{text}");
    assert_eq!(proxy.stats(), Stats { requests: 2, resets: 1, throttled: 1, ..Stats::default() });
}

#[test]
fn writes_a_kubeconfig() {
    let ca = CertifiedIssuer::self_signed(
        CertificateParams::new(Vec::<String>::new()).unwrap(),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let proxy = FaultProxy::start("https://127.0.0.1:1", &ca.pem(), Faults::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("fault-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = proxy.write_kubeconfig(&dir, "s3cr3t").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("server: \"{}\"", proxy.url())), "{text}");
    assert!(text.contains("token: \"s3cr3t\""), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_rejects_bad_inputs() {
    assert!(matches!(FaultProxy::start("not a url", "", Faults::default()), Err(Error::InvalidUpstream { .. })));
    assert!(matches!(
        FaultProxy::start("https://127.0.0.1:1", "no pem here", Faults::default()),
        Err(Error::NoCaCertificate)
    ));
}
