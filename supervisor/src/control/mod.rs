//! The control server: HTTP/1.1 with JSON over the Unix socket.
//!
//! Owns the socket file, the accept loop, per-connection limits, peer
//! identity (SO_PEERCRED plus the user database), routing and the mapping
//! of decisions to HTTP answers. It never decides *what* happens to an app
//! (that is the daemon, behind [`ControlTarget`], and `supervise`) nor *who*
//! may do it (that is `acl`).
//!
//! A hostile local user can connect, so every connection is bounded: caps
//! on concurrent connections, in total and per uid (one user holding
//! connections open must not lock out the others), a deadline for the
//! request head and body, a maximum head and body size; anything malformed
//! gets an error answer.

mod body;
mod error;
mod peer;
mod socket;
mod target;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use appvisor_protocol::routes::{Mutation, Route};
use appvisor_protocol::{
    Action, ActionRequest, ApiError, ApplyRequest, ErrorCode, LogStream, SignalRequest, WhoAmI,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::{UnixListener, UnixStream};

use self::error::{admin_only, hidden};
use self::peer::Peers;
use crate::acl::{self, Decision, Operation, Peer};
use crate::audit::{AuditOutcome, Events};
use crate::config::UserDb;
use crate::httpd::{self, Closing, Listener, Server};
pub use body::ResponseBody;
pub use socket::{bind_control_socket, SocketError};
pub use target::{ActError, ApplyError, ControlTarget, Denied, ReexecError};

/// Connections served at once; more are answered 503 and closed.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Connections one uid other than root may hold at once, so that a local
/// user holding connections open cannot lock everyone else out.
const MAX_CONNECTIONS_PER_UID: usize = 16;
/// Time a client has to send a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a refused request's body has to arrive before the answer goes
/// anyway: clients send it right after the head.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest request body: every request body is a small JSON object.
const MAX_BODY: usize = 64 * 1024;
/// Largest request head buffer (hyper's minimum is 8 KiB).
const MAX_HEAD: usize = 16 * 1024;

/// The control server's connection limits.
const SERVER: Server = Server {
    name: "control",
    connections: MAX_CONNECTIONS,
    per_uid: Some(MAX_CONNECTIONS_PER_UID),
    head_timeout: HEAD_TIMEOUT,
    max_head: MAX_HEAD,
};

/// Serves the control socket until `closing`; callers are looked up in
/// `users`.
pub async fn serve<T: ControlTarget>(
    listener: UnixListener,
    target: Arc<T>,
    users: Arc<dyn UserDb>,
    closing: Closing,
) {
    let peers = Peers::new(users);
    httpd::serve(SERVER, listener, closing, move |stream, cred, closing| {
        let target = target.clone();
        let peers = peers.clone();
        async move {
            let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
            match peers.lookup(cred.uid(), pid).await {
                Ok(peer) => serve_connection(stream, peer, target, closing).await,
                // Without a task: see `Listener::refuse` for Unix sockets.
                Err(err) => {
                    UnixListener::refuse(stream, httpd::busy_response(&format!("{err}; try again")))
                }
            }
        }
    })
    .await
}

async fn serve_connection<T: ControlTarget>(
    stream: UnixStream,
    peer: Peer,
    target: Arc<T>,
    closing: Closing,
) {
    let span = tracing::info_span!("control", peer.uid = peer.uid, peer.pid = peer.pid);
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |request| {
        let target = target.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(handle(&*target, &peer, request).await) }
    });
    SERVER.serve_http(stream, service, closing, span).await;
}

/// The route `path` names, if `method` is the one it takes.
fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ApiError> {
    let route = Route::parse(path).ok_or_else(|| no_route(path))?;
    let want = route.method();
    if *method != want {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{path} takes {want}, not {method}"),
        ));
    }
    Ok(route)
}

fn no_route(path: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route {path}"))
}

async fn handle<T: ControlTarget>(
    target: &T,
    peer: &Peer,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let mut body = RequestBody(Some(request.into_body()));
    let answer = match route(&method, &path) {
        Ok(route) => dispatch(target, peer, route, &query, &mut body).await,
        Err(err) => Err(err),
    };
    match answer {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(%method, %path, code = %err.code, "control request refused");
            // A client may send the body after the head (Python's
            // http.client does): answering and closing before it arrives
            // would give it EPIPE or a reset instead of this answer.
            body.drain().await;
            error_response(&err)
        }
    }
}

/// A request's body, read at most once: by the route that wants it, or
/// drained before an error answer.
struct RequestBody(Option<Incoming>);

impl RequestBody {
    async fn read(&mut self) -> Result<Bytes, ApiError> {
        match self.0.take() {
            Some(body) => read_body(body).await,
            None => Ok(Bytes::new()),
        }
    }

    /// Reads and discards what is left, at most [`MAX_BODY`] bytes within
    /// [`DRAIN_TIMEOUT`]; past either, the answer goes anyway.
    async fn drain(&mut self) {
        let Some(mut body) = self.0.take() else {
            return;
        };
        let discard = async {
            let mut seen = 0;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > MAX_BODY {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard).await;
    }
}

/// Answers one routed request, and audits it if its route mutates: the
/// audit is applied here, around every route that
/// [`Route::mutation`] names, so a new route cannot forget it.
async fn dispatch<T: ControlTarget>(
    target: &T,
    peer: &Peer,
    route: Route<'_>,
    query: &str,
    body: &mut RequestBody,
) -> Result<Response<ResponseBody>, ApiError> {
    let result = answer(target, peer, route, query, body).await;
    if let Some(mutation) = route.mutation() {
        audit(target.events(), peer, mutation, &result);
    }
    match result {
        Ok(answered) => Ok(answered.response),
        Err(failure) => Err(failure.into_error()),
    }
}

/// A request's answer, and how the audit trail names its outcome.
struct Answered {
    response: Response<ResponseBody>,
    outcome: AuditOutcome,
}

impl Answered {
    fn ok(response: Response<ResponseBody>) -> Answered {
        Answered {
            response,
            outcome: AuditOutcome::Ok,
        }
    }
}

/// Why a request got an error answer, which decides how it is audited.
#[derive(Debug)]
enum Failure {
    /// The caller may not: counted, and recorded within the caller's rate
    /// limit, since anyone can send these by the thousand.
    Refused(ApiError),
    /// The body could not be read, or is not what the route takes:
    /// answered, not audited.
    Malformed(ApiError),
    /// The daemon tried, and it did not work out: recorded.
    Failed(ApiError),
}

impl Failure {
    fn into_error(self) -> ApiError {
        match self {
            Failure::Refused(err) | Failure::Malformed(err) | Failure::Failed(err) => err,
        }
    }
}

/// Writes the audit record of one mutating request.
fn audit(events: &Events, peer: &Peer, mutation: Mutation<'_>, result: &Result<Answered, Failure>) {
    let Mutation { app, action } = mutation;
    match result {
        Ok(answered) => events.audit(peer, app, action, answered.outcome),
        Err(Failure::Refused(err)) => events.audit_refusal(peer, app, action, err.code.into()),
        Err(Failure::Failed(err)) => events.audit(peer, app, action, err.code.into()),
        Err(Failure::Malformed(_)) => {}
    }
}

async fn answer<T: ControlTarget>(
    target: &T,
    peer: &Peer,
    route: Route<'_>,
    query: &str,
    body: &mut RequestBody,
) -> Result<Answered, Failure> {
    let rules = target.admin_rules();
    match route {
        Route::WhoAmI => {
            let admin = acl::is_admin(peer, &rules);
            let apps = target.visible_apps(peer);
            let role = if admin {
                appvisor_protocol::Role::Admin
            } else if !apps.is_empty() {
                appvisor_protocol::Role::Operator
            } else {
                appvisor_protocol::Role::None
            };
            Ok(Answered::ok(json_response(&WhoAmI {
                uid: peer.uid,
                user: peer.user.clone(),
                groups: peer.groups.clone(),
                role,
                apps,
            })))
        }
        Route::Apps => Ok(Answered::ok(app_list_response(target, peer))),
        Route::App(name) => {
            let status = view(target, peer, name, "see", |app| target.status(app))?;
            Ok(Answered::ok(json_response(&status)))
        }
        Route::Action(name, action) => {
            let app = authorize_app(target, peer, name, Operation::Act, action.as_str())?;
            let bytes = body.read().await.map_err(Failure::Malformed)?;
            let result = if action == Action::Signal {
                let request: SignalRequest = parse_json(&bytes)?;
                let status = target
                    .signal(&app, &request.signal)
                    .await
                    .map_err(|err| Failure::Failed(err.into()))?;
                appvisor_protocol::ActionResult {
                    app: name.to_owned(),
                    action,
                    outcome: appvisor_protocol::Outcome::Done,
                    status,
                    log_tail: Vec::new(),
                    intent_error: None,
                }
            } else {
                let request: ActionRequest = parse_json_or_default(&bytes)?;
                target
                    .act(&app, action, peer, &request)
                    .await
                    .map_err(|err| Failure::Failed(err.into()))?
            };
            // The action's real outcome: a restart whose new instance did
            // not become ready is audited as failed, not as ok.
            Ok(Answered {
                outcome: result.outcome.into(),
                response: json_response(&result),
            })
        }
        Route::Security(name) => {
            let security = view(target, peer, name, "see", |app| target.security(app))?;
            Ok(Answered::ok(json_response(&security)))
        }
        Route::Logs(name) => {
            authorize_app(target, peer, name, Operation::View, "read the logs of")?;
            let params = LogParams::parse(query).map_err(Failure::Malformed)?;
            let logs = view(target, peer, name, "read the logs of", |app| {
                target.logs(app)
            })?;
            Ok(Answered::ok(text_response(body::log_body(
                logs,
                params.stream,
                params.lines,
                params.follow,
            ))))
        }
        Route::Events => {
            if acl::decide(peer, &rules, Operation::Events, None) != Decision::Allow {
                return Err(Failure::Refused(admin_only(
                    peer,
                    "follow the event stream",
                )));
            }
            Ok(Answered::ok(ndjson_response(body::event_body(
                target.events().subscribe(),
            ))))
        }
        Route::Daemon => {
            if !acl::is_admin(peer, &rules) {
                return Err(Failure::Refused(admin_only(
                    peer,
                    "see the daemon's status",
                )));
            }
            Ok(Answered::ok(json_response(&target.daemon_status())))
        }
        Route::Reexec => {
            if !acl::is_admin(peer, &rules) {
                return Err(Failure::Refused(admin_only(peer, "re-execute the daemon")));
            }
            let bytes = body.read().await.map_err(Failure::Malformed)?;
            let request: appvisor_protocol::ReexecRequest = parse_json_or_default(&bytes)?;
            target
                .request_reexec(&peer.user, request.id)
                .await
                .map_err(|err| Failure::Failed(err.into()))?;
            Ok(Answered::ok(json_response(&request)))
        }
        Route::ConfigApply => {
            if acl::decide(peer, &rules, Operation::ApplyConfig, None) != Decision::Allow {
                return Err(Failure::Refused(admin_only(
                    peer,
                    "apply the configuration",
                )));
            }
            let bytes = body.read().await.map_err(Failure::Malformed)?;
            let request: ApplyRequest = parse_json_or_default(&bytes)?;
            let report = target
                .apply_config(request.dry_run, Some(peer))
                .await
                .map_err(|err| Failure::Failed(err.into()))?;
            Ok(Answered::ok(json_response(&report)))
        }
    }
}

/// The app `name` as it was when `peer` was let do `op` to it, or the
/// answer that refuses it.
fn authorize_app<T: ControlTarget>(
    target: &T,
    peer: &Peer,
    name: &str,
    op: Operation,
    verb: &str,
) -> Result<T::App, Failure> {
    target.authorize(peer, name, op).map_err(|denied| {
        Failure::Refused(match denied {
            Denied::Hidden => hidden(peer, name, verb),
            Denied::AdminOnly => admin_only(peer, verb),
        })
    })
}

/// What `read` finds of app `name`, decided for `peer` and read from the
/// version decided on. An app replaced in between (an update) is decided
/// again, a few times: a read has nothing to undo. `None` from `read` (no
/// task, or replaced each time) is answered as a hidden app.
fn view<T: ControlTarget, R>(
    target: &T,
    peer: &Peer,
    name: &str,
    verb: &str,
    read: impl Fn(&T::App) -> Option<R>,
) -> Result<R, Failure> {
    for _ in 0..VIEW_ATTEMPTS {
        let app = authorize_app(target, peer, name, Operation::View, verb)?;
        if let Some(found) = read(&app) {
            return Ok(found);
        }
    }
    Err(Failure::Refused(hidden(peer, name, verb)))
}

/// How many times [`view`] decides on an app that keeps changing.
const VIEW_ATTEMPTS: usize = 3;

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "request body not received within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(err))
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body larger than {MAX_BODY} bytes"),
            ))
        }
        Ok(Err(err)) => Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("reading request body: {err}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|err| {
        Failure::Malformed(ApiError::new(
            ErrorCode::BadRequest,
            format!("invalid JSON body: {err}"),
        ))
    })
}

/// [`parse_json`], where an empty body means the request's defaults.
fn parse_json_or_default<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, Failure> {
    if bytes.is_empty() {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct LogParams {
    stream: LogStream,
    lines: usize,
    follow: bool,
}

impl LogParams {
    /// Most lines one request may ask for.
    const MAX_LINES: usize = 100_000;

    fn parse(query: &str) -> Result<LogParams, ApiError> {
        let mut params = LogParams {
            stream: LogStream::Both,
            lines: 100,
            follow: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = || {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("invalid log parameter {key}={value}"),
                )
            };
            match key {
                "stream" => params.stream = value.parse().map_err(|_| bad())?,
                "lines" => {
                    params.lines = value
                        .parse::<usize>()
                        .map_err(|_| bad())?
                        .min(Self::MAX_LINES)
                }
                "follow" => params.follow = value.parse::<bool>().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        Ok(params)
    }
}

fn error_response(err: &ApiError) -> Response<ResponseBody> {
    let status =
        StatusCode::from_u16(err.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_type(
        status,
        "application/json",
        ResponseBody::full(httpd::error_json(err)),
    )
}

fn json_response<T: serde::Serialize>(value: &T) -> Response<ResponseBody> {
    let mut bytes = serde_json::to_vec(value).expect("protocol types serialize");
    bytes.push(b'\n');
    with_type(
        StatusCode::OK,
        "application/json",
        ResponseBody::full(bytes),
    )
}

/// `GET /v1/apps`: what [`json_response`] answers for the
/// [`appvisor_protocol::AppList`] of `peer`, assembled from the statuses
/// the daemon keeps rendered rather than built and serialized anew (with
/// a thousand apps, that was most of the request's time).
fn app_list_response<T: ControlTarget>(target: &T, peer: &Peer) -> Response<ResponseBody> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"apps\":");
    target.write_statuses(peer, &mut bytes);
    // As `AppList` skips them: only when there are some.
    let notices = target.notices(peer);
    if !notices.is_empty() {
        bytes.extend_from_slice(b",\"notices\":");
        serde_json::to_writer(&mut bytes, &notices).expect("strings serialize");
    }
    bytes.extend_from_slice(b"}\n");
    with_type(
        StatusCode::OK,
        "application/json",
        ResponseBody::full(bytes),
    )
}

fn text_response(body: ResponseBody) -> Response<ResponseBody> {
    with_type(StatusCode::OK, "text/plain; charset=utf-8", body)
}

fn ndjson_response(body: ResponseBody) -> Response<ResponseBody> {
    with_type(StatusCode::OK, "application/x-ndjson", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: ResponseBody,
) -> Response<ResponseBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests;
