//! The status server: read-only HTTP on `[status] listen` (TCP), without
//! identity, for monitoring.
//!
//! Routes: `GET /healthz` ("ok" while the daemon answers), `GET /v1/apps`
//! (the control socket's admin view, as JSON), `GET /metrics` (OpenMetrics
//! text, which Prometheus scrapes). Everything is read when a request
//! asks: the server keeps no state and arms no timer, so an idle daemon
//! stays idle.
//!
//! Anyone who reaches the port can connect, so connections are bounded like
//! the control server's: a cap on concurrent connections, a deadline for the
//! request head, a maximum head size, and no request bodies at all.
//!
//! This module never changes anything: it has no route that acts on an app,
//! and it reads the daemon only through [`StatusSource`].

pub mod metrics;
pub mod usage;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use appvisor_protocol::{ApiError, AppList, AppStatus, ErrorCode};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::RequestKey;
use crate::httpd::{self, Closing, Server};
pub use metrics::{AppMetrics, Scrape};
pub use usage::{OpenFiles, Roots, Usage};

/// Connections served at once; more are answered 503 and closed.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head buffer (hyper's minimum is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// How long one request may read cgroup and /proc files.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// One app as the status server reads it from the daemon.
#[derive(Debug, Clone)]
pub struct AppSample {
    pub status: AppStatus,
    /// When the running instance started, in seconds since the Unix
    /// epoch: the same at every scrape while it runs.
    pub start_time: Option<f64>,
    pub readiness_failures: u64,
    /// `[limits] memory`, in bytes.
    pub memory_limit: Option<u64>,
    /// The app's cgroup v2 directory, if the daemon uses cgroups.
    pub cgroup: Option<PathBuf>,
    /// `appctl security`'s exposure score, 0 (tight) to 10 (unconfined).
    pub exposure: Option<f64>,
}

/// What the status server needs from the daemon; tests supply fake data.
pub trait StatusSource: Send + Sync + 'static {
    /// Every app, sorted by name, as an admin sees it.
    fn apps(&self) -> Vec<AppSample>;
    /// ((action, outcome), count) of audited control requests.
    fn control_requests(&self) -> Vec<(RequestKey, u64)>;
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot listen on {address} for the status server: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `[status] listen`.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StatusError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StatusError::Bind { address, source })
}

/// The status server's connection limits.
const SERVER: Server = Server {
    name: "status",
    connections: MAX_CONNECTIONS,
    per_uid: None,
    head_timeout: HEAD_TIMEOUT,
    max_head: MAX_HEAD,
};

/// Serves the status routes on `listener` until `closing`.
pub async fn serve<S: StatusSource>(
    listener: TcpListener,
    source: Arc<S>,
    roots: Roots,
    closing: Closing,
) {
    let usage = Arc::new(UsageFiles {
        roots,
        files: OpenFiles::default(),
    });
    httpd::serve(SERVER, listener, closing, move |stream, peer, closing| {
        serve_connection(stream, peer, source.clone(), usage.clone(), closing)
    })
    .await
}

async fn serve_connection<S: StatusSource>(
    stream: TcpStream,
    peer: SocketAddr,
    source: Arc<S>,
    usage: Arc<UsageFiles>,
    closing: Closing,
) {
    let span = tracing::debug_span!("status", peer = %peer);
    let service = hyper::service::service_fn(move |request| {
        let source = source.clone();
        let usage = usage.clone();
        // Reading cgroup and /proc files blocks, briefly: keep it off the
        // runtime's worker threads. An app's process can make its /proc
        // files hang (a read of smaps_rollup waits for its memory map's
        // lock): the request fails after SCRAPE_TIMEOUT, its thread counted
        // among the hung blocking jobs until the read returns, and none is
        // started while too many are (judge::run_blocking).
        async move {
            let scrape = move || handle(&*source, &usage, &request);
            let answer = match crate::judge::run_blocking(SCRAPE_TIMEOUT, scrape).await {
                Ok(answer) => answer,
                Err(crate::judge::Unjudged::Failed(_)) => error_response(&ApiError::new(
                    ErrorCode::Internal,
                    "the status handler panicked",
                )),
                Err(unanswered) => error_response(&ApiError::new(
                    ErrorCode::Unavailable,
                    format!("cgroup and /proc reads: {unanswered}"),
                )),
            };
            Ok::<_, Infallible>(answer)
        }
    });
    SERVER.serve_http(stream, service, closing, span).await;
}

/// Where usage files are, and those kept open between scrapes.
#[derive(Debug)]
struct UsageFiles {
    roots: Roots,
    files: OpenFiles,
}

/// Answers one request; pure but for the usage files `usage` points at.
fn handle<S: StatusSource + ?Sized>(
    source: &S,
    usage: &UsageFiles,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    match answer(
        source,
        usage,
        request.method(),
        request.uri().path(),
        has_body(request),
    ) {
        Ok(response) => response,
        Err(err) => error_response(&err),
    }
}

fn has_body<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn answer<S: StatusSource + ?Sized>(
    source: &S,
    usage: &UsageFiles,
    method: &Method,
    path: &str,
    has_body: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let route = match path.trim_end_matches('/') {
        "/healthz" => Route::Healthz,
        "/v1/apps" => Route::Apps,
        "/metrics" => Route::Metrics,
        _ => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no route {path} (the status server serves /healthz, /v1/apps and /metrics)"
                ),
            ))
        }
    };
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} takes GET, not {method} (the status server is read-only)"),
        ));
    }
    if has_body {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the status server accepts no request body",
        ));
    }
    Ok(match route {
        Route::Healthz => response("text/plain; charset=utf-8", b"ok\n".to_vec()),
        Route::Apps => {
            let list = AppList {
                apps: source.apps().into_iter().map(|a| a.status).collect(),
                // The status listener has no identity: notices are for admins.
                notices: Vec::new(),
            };
            let mut bytes = serde_json::to_vec(&list).expect("protocol types serialize");
            bytes.push(b'\n');
            response("application/json", bytes)
        }
        Route::Metrics => {
            let scrape = scrape(source, &usage.roots, &usage.files);
            response(metrics::CONTENT_TYPE, metrics::render(&scrape).into_bytes())
        }
    })
}

enum Route {
    Healthz,
    Apps,
    Metrics,
}

/// Reads the daemon and each app's usage now, with the usage files the
/// last scrape left open in `files`.
pub fn scrape<S: StatusSource + ?Sized>(source: &S, roots: &Roots, files: &OpenFiles) -> Scrape {
    let mut reader = roots.reader(files);
    let apps = source
        .apps()
        .into_iter()
        .map(|sample| AppMetrics {
            usage: reader.usage(usage::AppUsageOf {
                cgroup: sample.cgroup.as_deref(),
                pid: sample.status.pid,
            }),
            status: sample.status,
            start_time: sample.start_time,
            readiness_failures: sample.readiness_failures,
            memory_limit: sample.memory_limit,
            exposure: sample.exposure,
        })
        .collect();
    Scrape {
        apps,
        control_requests: source.control_requests(),
    }
}

fn response(content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    with_type(StatusCode::OK, content_type, body)
}

fn error_response(err: &ApiError) -> Response<Full<Bytes>> {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_type(status, "application/json", httpd::error_json(err))
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests;
