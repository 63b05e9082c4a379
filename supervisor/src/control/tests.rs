//! The control server against a fake daemon: routing, authorization,
//! audit and error answers, over a real connection with a chosen peer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use appvisor_protocol::{ActionResult, AppSecurity, AppStatus, ApplyReport, Outcome, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::acl::AdminRules;
use crate::config::AccessSpec;
use crate::logs::AppLogs;

/// A daemon with apps `shop` (alice operates it) and `blog` (nobody
/// does), which records what it was asked to do.
#[derive(Debug)]
struct Fake {
    events: Events,
    access: BTreeMap<String, AccessSpec>,
    /// What `act` and `signal` were asked, in order.
    acted: Mutex<Vec<(String, Action)>>,
    /// What `act` answers, if not a done action.
    act_error: Mutex<Option<ActError>>,
    /// How many reads of a status find the app replaced since its check.
    replaced_reads: Mutex<usize>,
    /// How many times access was decided.
    decisions: Mutex<usize>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        let shop = AccessSpec {
            users: vec!["alice".into()],
            groups: Vec::new(),
        };
        Arc::new(Fake {
            events: Events::default(),
            access: BTreeMap::from([
                ("shop".into(), shop),
                ("blog".into(), AccessSpec::default()),
            ]),
            acted: Mutex::default(),
            act_error: Mutex::default(),
            replaced_reads: Mutex::default(),
            decisions: Mutex::default(),
        })
    }

    fn acted(&self) -> Vec<(String, Action)> {
        self.acted.lock().unwrap().clone()
    }

    /// ((action, outcome), count) of what was audited.
    fn audited(&self) -> Vec<((String, String), u64)> {
        self.events
            .control_requests()
            .into_iter()
            .map(|(key, n)| ((key.action.to_owned(), key.outcome.as_str().to_owned()), n))
            .collect()
    }
}

impl Fake {
    fn statuses(&self, peer: &Peer) -> Vec<AppStatus> {
        self.visible_apps(peer).iter().map(|n| status(n)).collect()
    }
}

fn status(name: &str) -> AppStatus {
    crate::supervise::bare_status(name, State::Running, "ready".into())
}

impl ControlTarget for Fake {
    fn events(&self) -> &Events {
        &self.events
    }

    fn admin_rules(&self) -> AdminRules {
        AdminRules {
            users: vec!["ops".into()],
            groups: Vec::new(),
        }
    }

    type App = String;

    fn authorize(&self, peer: &Peer, name: &str, op: Operation) -> Result<String, Denied> {
        *self.decisions.lock().unwrap() += 1;
        let access = self.access.get(name).ok_or(Denied::Hidden)?;
        Denied::check(acl::decide(peer, &self.admin_rules(), op, Some(access)))?;
        Ok(name.to_owned())
    }

    fn visible_apps(&self, peer: &Peer) -> Vec<String> {
        let rules = self.admin_rules();
        self.access
            .iter()
            .filter(|(_, access)| {
                acl::decide(peer, &rules, Operation::View, Some(access)) == Decision::Allow
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn write_statuses(&self, peer: &Peer, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.statuses(peer)).unwrap();
    }

    fn notices(&self, peer: &Peer) -> Vec<String> {
        if acl::is_admin(peer, &self.admin_rules()) {
            vec!["\"x.toml\" is ignored: not an app".into()]
        } else {
            Vec::new()
        }
    }

    fn status(&self, name: &String) -> Option<AppStatus> {
        let mut replaced = self.replaced_reads.lock().unwrap();
        if *replaced > 0 {
            *replaced -= 1;
            return None;
        }
        self.access.contains_key(name).then(|| status(name))
    }

    fn security(&self, _name: &String) -> Option<AppSecurity> {
        None
    }

    fn logs(&self, _name: &String) -> Option<Arc<AppLogs>> {
        None
    }

    async fn act(
        &self,
        name: &String,
        action: Action,
        _peer: &Peer,
        _request: &ActionRequest,
    ) -> Result<ActionResult, ActError> {
        self.acted.lock().unwrap().push((name.to_owned(), action));
        if let Some(err) = self.act_error.lock().unwrap().clone() {
            return Err(err);
        }
        Ok(ActionResult {
            app: name.to_owned(),
            action,
            outcome: Outcome::Done,
            status: status(name),
            log_tail: Vec::new(),
            intent_error: None,
        })
    }

    async fn signal(&self, name: &String, _signal: &str) -> Result<AppStatus, ActError> {
        self.acted
            .lock()
            .unwrap()
            .push((name.to_owned(), Action::Signal));
        Ok(status(name))
    }

    async fn apply_config(
        &self,
        dry_run: bool,
        _peer: Option<&Peer>,
    ) -> Result<ApplyReport, ApplyError> {
        Ok(ApplyReport {
            dry_run,
            ..ApplyReport::default()
        })
    }

    fn daemon_status(&self) -> appvisor_protocol::DaemonStatus {
        appvisor_protocol::DaemonStatus {
            version: "test".to_owned(),
            pid: 1,
            binary: String::new(),
            handoff: None,
        }
    }

    async fn request_reexec(&self, _by: &str, _id: u64) -> Result<(), ReexecError> {
        Ok(())
    }
}

fn peer(uid: u32, user: &str) -> Peer {
    Peer {
        uid,
        pid: Some(4242),
        user: user.to_owned(),
        groups: vec![user.to_owned()],
    }
}

fn alice() -> Peer {
    peer(1002, "alice")
}

fn mallory() -> Peer {
    peer(1004, "mallory")
}

fn root() -> Peer {
    peer(0, "root")
}

/// An answer: its status, and its body (de-chunked; none for the event stream).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn error(&self) -> ApiError {
        serde_json::from_str::<appvisor_protocol::ErrorBody>(&self.body)
            .unwrap_or_else(|err| panic!("not an error body ({err}): {self:?}"))
            .error
    }
}

/// Sends `method path` with `body` as `peer`, over one connection served
/// by the real connection handler, and reads the answer (a streamed body,
/// as the event stream's, is not read).
async fn send(fake: &Arc<Fake>, peer: Peer, method: &str, path: &str, body: &str) -> Answer {
    let (mut client, server) = UnixStream::pair().unwrap();
    tokio::spawn(serve_connection(
        server,
        peer,
        fake.clone(),
        Closing::never(),
    ));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    // The event stream never ends: its head is all there is to read.
    let endless = path == appvisor_protocol::routes::EVENTS;
    let mut bytes = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.unwrap();
            bytes.extend_from_slice(&buf[..n]);
            if n == 0 || (endless && bytes.windows(4).any(|w| w == b"\r\n\r\n")) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("no answer to {method} {path} within 10s"));
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer { status, body }
}

/// The data of a chunked body (as much of it as arrived).
fn dechunk(mut chunked: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        chunked = rest[size..].trim_start_matches("\r\n");
    }
    data
}

fn counts(pairs: &[(&str, &str, u64)]) -> Vec<((String, String), u64)> {
    pairs
        .iter()
        .map(|(action, outcome, n)| ((action.to_string(), outcome.to_string()), *n))
        .collect()
}

#[tokio::test]
async fn a_refused_action_is_audited_and_answered_as_not_found() {
    let fake = Fake::new();
    let mut bus = fake.events.subscribe();
    let answer = send(&fake, alice(), "POST", "/v1/apps/blog/restart", "").await;
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(
        answer.error().message,
        "no app named blog that alice may restart (if it exists, ask an admin to add you to [access] in apps.d/blog.toml)"
    );
    assert_eq!(fake.acted(), [], "a refused request does not act");
    assert_eq!(fake.audited(), counts(&[("restart", "not_found", 1)]));
    match bus.try_recv() {
        Ok(appvisor_protocol::Event::Audit(record)) => {
            assert_eq!(
                (
                    record.uid,
                    record.user.as_str(),
                    record.app.as_deref(),
                    record.outcome.as_str()
                ),
                (1002, "alice", Some("blog"), "not_found")
            );
        }
        other => panic!("no audit record on the event bus: {other:?}"),
    }
}

/// `GET /v1/apps`, assembled from statuses the daemon keeps rendered, is
/// what serde writes for the caller's `AppList`, notices and all.
#[tokio::test]
async fn the_app_list_is_serdes_rendering_of_what_the_caller_may_see() {
    let fake = Fake::new();
    for peer in [root(), alice(), mallory()] {
        let answer = send(&fake, peer.clone(), "GET", "/v1/apps", "").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let list = appvisor_protocol::AppList {
            apps: fake.statuses(&peer),
            notices: fake.notices(&peer),
        };
        let want = serde_json::to_string(&list).unwrap() + "\n";
        assert_eq!(answer.body, want, "{}", peer.user);
    }
}

#[tokio::test]
async fn a_config_apply_by_a_non_admin_is_forbidden_and_audited() {
    let fake = Fake::new();
    let answer = send(&fake, mallory(), "POST", "/v1/config/apply", "{}").await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.error().code, ErrorCode::Forbidden);
    assert_eq!(fake.audited(), counts(&[("config/apply", "forbidden", 1)]));
}

#[tokio::test]
async fn a_malformed_request_gets_an_error_answer_and_acts_on_nothing() {
    let fake = Fake::new();
    let cases = [
        ("POST", "/v1/apps/shop/signal", "{", 400, "invalid JSON body: EOF while parsing an object at line 1 column 1"),
        ("POST", "/v1/apps/shop/signal", "", 400, "invalid JSON body: EOF while parsing a value at line 1 column 0"),
        ("POST", "/v1/apps/shop/restart", r#"{"wiat":true}"#, 400, "invalid JSON body: unknown field `wiat`, expected `wait` or `timeout_ms` at line 1 column 7"),
        ("GET", "/v1/apps/shop/logs?stream=stdin", "", 400, "invalid log parameter stream=stdin"),
        ("GET", "/v1/apps/shop/restart", "", 405, "/v1/apps/shop/restart takes POST, not GET"),
        ("POST", "/v1/apps/shop/explode", "", 404, "no route /v1/apps/shop/explode"),
    ];
    for (method, path, body, status, message) in cases {
        let answer = send(&fake, alice(), method, path, body).await;
        assert_eq!(
            (answer.status, answer.error().message.as_str()),
            (status, message),
            "{method} {path} {body}"
        );
    }
    assert_eq!(fake.acted(), [], "nothing malformed reaches the daemon");
    assert_eq!(
        fake.audited(),
        [],
        "a malformed body is answered, not audited"
    );
}

#[tokio::test]
async fn a_mutating_route_is_audited_exactly_once_and_a_read_not_at_all() {
    for route in Route::every("shop") {
        let fake = Fake::new();
        let body = match route {
            Route::Action(_, Action::Signal) => r#"{"signal":"HUP"}"#,
            _ => "",
        };
        let answer = send(&fake, root(), route.method().as_str(), &route.path(), body).await;
        let want = match route.mutation() {
            Some(mutation) => {
                assert_eq!(answer.status, 200, "{route:?}: {answer:?}");
                counts(&[(mutation.action, "ok", 1)])
            }
            None => Vec::new(),
        };
        assert_eq!(fake.audited(), want, "{route:?}");
    }
}

#[tokio::test]
async fn a_failed_action_is_audited_with_its_error_code() {
    let fake = Fake::new();
    *fake.act_error.lock().unwrap() = Some(ActError::Gone { app: "shop".into() });
    let answer = send(&fake, alice(), "POST", "/v1/apps/shop/stop", "").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(
        answer.error().message,
        "shop is being removed or the daemon is stopping"
    );
    assert_eq!(fake.acted(), [("shop".to_owned(), Action::Stop)]);
    assert_eq!(fake.audited(), counts(&[("stop", "unavailable", 1)]));
}

#[tokio::test]
async fn a_status_read_of_an_app_replaced_since_its_check_is_decided_again() {
    let fake = Fake::new();
    // Replaced once between the check and the read: decided again, read.
    *fake.replaced_reads.lock().unwrap() = 1;
    let answer = send(&fake, alice(), "GET", "/v1/apps/shop", "").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(*fake.decisions.lock().unwrap(), 2);
    // Replaced at every read: never read with a stale decision.
    *fake.replaced_reads.lock().unwrap() = 10;
    let answer = send(&fake, alice(), "GET", "/v1/apps/shop", "").await;
    assert_eq!(answer.status, 404, "{answer:?}");
}

#[tokio::test]
async fn an_operator_acts_on_its_app_and_sees_only_its_apps() {
    let fake = Fake::new();
    let answer = send(
        &fake,
        alice(),
        "POST",
        "/v1/apps/shop/restart",
        r#"{"wait":true}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let result: ActionResult = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        (result.app.as_str(), result.outcome),
        ("shop", Outcome::Done)
    );

    let answer = send(&fake, alice(), "GET", "/v1/whoami", "").await;
    let who: WhoAmI = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        (who.role, who.apps),
        (appvisor_protocol::Role::Operator, vec!["shop".to_owned()])
    );

    let answer = send(&fake, alice(), "GET", "/v1/apps/blog", "").await;
    assert_eq!(answer.status, 404, "{answer:?}");
}

#[test]
fn routes_follow_design() {
    let cases: &[(Method, &str, Result<Route<'_>, ErrorCode>)] = &[
        (Method::GET, "/v1/whoami", Ok(Route::WhoAmI)),
        (Method::GET, "/v1/apps", Ok(Route::Apps)),
        (Method::GET, "/v1/apps/", Ok(Route::Apps)),
        (Method::GET, "/v1/apps/shop", Ok(Route::App("shop"))),
        (
            Method::POST,
            "/v1/apps/shop/restart",
            Ok(Route::Action("shop", Action::Restart)),
        ),
        (
            Method::POST,
            "/v1/apps/shop/signal",
            Ok(Route::Action("shop", Action::Signal)),
        ),
        (Method::GET, "/v1/apps/shop/logs", Ok(Route::Logs("shop"))),
        (
            Method::GET,
            "/v1/apps/shop/security",
            Ok(Route::Security("shop")),
        ),
        (Method::GET, "/v1/events", Ok(Route::Events)),
        (Method::POST, "/v1/config/apply", Ok(Route::ConfigApply)),
        (
            Method::GET,
            "/v1/apps/shop/restart",
            Err(ErrorCode::MethodNotAllowed),
        ),
        (
            Method::POST,
            "/v1/apps/shop/explode",
            Err(ErrorCode::NotFound),
        ),
        (Method::GET, "/v2/apps", Err(ErrorCode::NotFound)),
        (Method::GET, "/", Err(ErrorCode::NotFound)),
    ];
    for (method, path, want) in cases {
        let got = route(method, path).map_err(|e| e.code);
        assert_eq!(&got, want, "{method} {path}");
    }
}

#[test]
fn log_parameters() {
    assert_eq!(
        LogParams::parse("stream=stderr&lines=5&follow=true").unwrap(),
        LogParams {
            stream: LogStream::Stderr,
            lines: 5,
            follow: true
        }
    );
    assert_eq!(
        LogParams::parse("").unwrap(),
        LogParams {
            stream: LogStream::Both,
            lines: 100,
            follow: false
        }
    );
    assert_eq!(
        LogParams::parse("stream=both").unwrap().stream,
        LogStream::Both
    );
    assert_eq!(
        LogParams::parse("lines=99999999").unwrap().lines,
        LogParams::MAX_LINES
    );
    assert_eq!(
        LogParams::parse("stream=stdin").unwrap_err().message,
        "invalid log parameter stream=stdin"
    );
}
