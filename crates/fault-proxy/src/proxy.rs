//! Accept loop, per-connection serving, fault application and forwarding.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::Control;
use crate::faults::Outcome;

/// Body type of every response the proxy writes: upstream bodies stream through, injected ones are buffered.
type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Pooled HTTPS client towards the apiserver.
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Everything a connection task needs; lives on the proxy's runtime only.
pub(crate) struct Forwarder {
    pub(crate) control: Arc<Control>,
    pub(crate) client: UpstreamClient,
    /// `scheme://authority[/prefix]` without a trailing slash; the client's path-and-query is appended.
    pub(crate) upstream_base: String,
}

/// Accepts client connections until `shutdown` fires, then returns (dropping the listener).
pub(crate) async fn accept_loop(listener: TcpListener, forwarder: Arc<Forwarder>, shutdown: Arc<Notify>) {
    loop {
        tokio::select! {
            () = shutdown.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(serve_connection(Arc::clone(&forwarder), stream));
                }
                Err(error) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    warn!(%error, "fault-proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// Serves one client connection; an injected reset aborts it with a TCP RST.
async fn serve_connection(forwarder: Arc<Forwarder>, stream: TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "set_nodelay failed");
    }
    // Keep a duplicate of the socket so SO_LINGER can still be set after hyper owns the stream.
    let (stream, raw) = match duplicate(stream) {
        Ok(pair) => pair,
        Err(error) => {
            warn!(%error, "fault-proxy could not duplicate a client socket; dropping it");
            return;
        }
    };
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = Arc::clone(&kill);
        service_fn(move |request| handle(Arc::clone(&forwarder), Arc::clone(&kill), request))
    };
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                debug!(%error, "client connection ended with an error");
            }
        }
        () = kill.notified() => {
            // Linger 0 makes the final close send RST (not FIN), discarding anything unsent:
            // the client sees "connection reset by peer", like a crashed apiserver or a dropped LB flow.
            if let Err(error) = socket2::SockRef::from(&raw).set_linger(Some(Duration::ZERO)) {
                warn!(%error, "could not set SO_LINGER=0; the reset degrades to a plain close");
            }
        }
    }
    // Both handles to the socket are closed here (hyper's when the select dropped it, ours now).
    drop(raw);
}

/// Splits a tokio stream into itself plus a std duplicate of the same socket.
fn duplicate(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let raw = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, raw))
}

/// Applies the next fault decision to one request.
async fn handle(
    forwarder: Arc<Forwarder>,
    kill: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let control = &forwarder.control;
    control.counters.requests.increment();
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();

    // Buffer the body first: apiserver requests are small JSON, and a complete read means a
    // reset below happens strictly after the client finished sending.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            debug!(%error, %method, %path, "reading the client request body failed");
            return Ok(status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("fault-proxy: reading request body: {error}"),
                None,
            ));
        }
    };

    let outcome = control.decide(&path);
    let (delay, reset_after) = match outcome {
        Outcome::ServerError { code } => {
            control.counters.server_errors.increment();
            debug!(fault = "server_error", code, %method, %path, "fault-proxy injected fault");
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Ok(status_response(status, server_error_reason(code), INJECTED, None));
        }
        Outcome::Throttle => {
            control.counters.throttled.increment();
            let retry_after = control.retry_after_secs();
            debug!(fault = "throttle", retry_after, %method, %path, "fault-proxy injected fault");
            return Ok(status_response(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", INJECTED, Some(retry_after)));
        }
        Outcome::Reset => {
            control.counters.resets.increment();
            debug!(fault = "reset", %method, %path, "fault-proxy injected fault");
            return reset(&kill).await;
        }
        Outcome::Forward { delay } => (delay, After::Answer),
        Outcome::ForwardThenReset { delay } => (delay, After::Reset),
        Outcome::ForwardThenError { delay, code } => (delay, After::Error(code)),
    };

    if let Some(delay) = delay {
        control.counters.delayed.increment();
        debug!(fault = "latency", delay_ms = delay.as_millis(), %method, %path, "fault-proxy injected fault");
        tokio::time::sleep(delay).await;
    }

    control.counters.forwarded.increment();
    let upstream = forward(&forwarder, parts, body).await;
    match reset_after {
        After::Answer => {}
        After::Reset => {
            control.counters.resets_after_forward.increment();
            let upstream_status = upstream.as_ref().ok().map(|r| r.status().as_u16());
            debug!(fault = "reset_after_forward", ?upstream_status, %method, %path, "fault-proxy injected fault");
            // The upstream response (and with it the applied request's result) is thrown away.
            drop(upstream);
            return reset(&kill).await;
        }
        After::Error(code) => {
            control.counters.errors_after_forward.increment();
            // Read upstream's answer to the end first: the request is then certainly applied
            // (or refused) before the client hears anything.
            let upstream_status = match upstream {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    Some(status)
                }
                Err(_) => None,
            };
            debug!(fault = "error_after_forward", code, ?upstream_status, %method, %path, "fault-proxy injected fault");
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            return Ok(status_response(status, server_error_reason(code), INJECTED_AFTER, None));
        }
    }
    match upstream {
        Ok(response) => Ok(response),
        Err(message) => {
            control.counters.upstream_errors.increment();
            warn!(%method, %path, error = %message, "fault-proxy upstream request failed");
            Ok(status_response(StatusCode::BAD_GATEWAY, "InternalError", &message, None))
        }
    }
}

const INJECTED: &str = "injected by fault-proxy";
const INJECTED_AFTER: &str = "injected by fault-proxy after forwarding (upstream applied the request)";

/// What happens after a request was forwarded.
#[derive(Clone, Copy)]
enum After {
    /// Pass upstream's answer through.
    Answer,
    /// Reset the connection instead.
    Reset,
    /// Answer this 5xx instead.
    Error(u16),
}

/// The Status reason the apiserver itself uses for each injected code.
fn server_error_reason(code: u16) -> &'static str {
    match code {
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// Asks the connection task to abort with RST and never answers this request.
async fn reset(kill: &Notify) -> Result<Response<ProxyBody>, Infallible> {
    kill.notify_one();
    std::future::pending().await
}

/// Sends the request upstream and returns its response with the body still streaming.
async fn forward(
    forwarder: &Forwarder,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Response<ProxyBody>, String> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri: Uri = format!("{}{}", forwarder.upstream_base, path_and_query)
        .parse()
        .map_err(|e| format!("fault-proxy: building upstream URI: {e}"))?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = end_to_end(parts.headers, true);
    let response = forwarder
        .client
        .request(request)
        .await
        .map_err(|e| format!("fault-proxy: upstream request failed: {}", error_chain(&e)))?;
    let (mut parts, body) = response.into_parts();
    parts.headers = end_to_end(parts.headers, false);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Drops hop-by-hop headers (and, towards upstream, Host, so the client sets upstream's own).
fn end_to_end(mut headers: HeaderMap, is_request: bool) -> HeaderMap {
    // Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    if is_request {
        headers.remove(header::HOST);
    }
    headers
}

/// Full error chain in one line, since hyper-util's top-level message alone says little.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A Kubernetes `Status` failure response, shaped like the apiserver's own.
fn status_response(status: StatusCode, reason: &str, message: &str, retry_after: Option<u64>) -> Response<ProxyBody> {
    let mut body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status.as_u16(),
    });
    if let Some(seconds) = retry_after {
        body["details"] = serde_json::json!({ "retryAfterSeconds": seconds });
    }
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string())).map_err(|never: Infallible| match never {}).boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:1"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        let out = end_to_end(headers.clone(), true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[header::AUTHORIZATION], "Bearer t");
        let out = end_to_end(headers, false);
        assert!(out.contains_key(header::HOST));
        assert!(!out.contains_key("x-secret"));
    }
}
