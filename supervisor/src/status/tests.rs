use std::sync::Mutex;

use appvisor_protocol::State;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::audit::AuditOutcome;

#[derive(Debug, Default)]
struct Fake {
    apps: Mutex<Vec<AppSample>>,
}

impl StatusSource for Fake {
    fn apps(&self) -> Vec<AppSample> {
        self.apps.lock().unwrap().clone()
    }

    fn control_requests(&self) -> Vec<(RequestKey, u64)> {
        let key = RequestKey {
            action: "restart",
            outcome: AuditOutcome::Ok,
        };
        vec![(key, 4)]
    }
}

fn sample(name: &str, state: State, restarts: u32) -> AppSample {
    AppSample {
        status: AppStatus {
            name: name.to_owned(),
            state,
            reason: "because".to_owned(),
            pid: None,
            uptime_secs: None,
            since: 1,
            restarts,
            failures: 0,
            description: String::new(),
            app_groups: Vec::new(),
            user: "shop".to_owned(),
            directory: "/srv/shop".to_owned(),
            release: None,
            autostart: true,
            stopped_by: None,
            config_error: None,
            log_error: None,
            log_dropped_bytes: 0,
        },
        start_time: None,
        readiness_failures: 0,
        memory_limit: None,
        cgroup: None,
        exposure: None,
    }
}

/// A server on 127.0.0.1:0 over `fake`; returns its address.
async fn start(fake: Arc<Fake>) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, fake, Roots::default(), Closing::never()));
    address
}

/// Sends `request` as is and reads the answer to EOF: (status, head, body).
async fn raw(address: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
    raw(
        address,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn serves_healthz_apps_and_metrics() {
    let fake = Arc::new(Fake::default());
    *fake.apps.lock().unwrap() = vec![
        sample("blog", State::Fatal, 0),
        sample("shop", State::Running, 2),
    ];
    let address = start(fake.clone()).await;

    assert_eq!(get(address, "/healthz").await.2, "ok\n");

    let (status, head, body) = get(address, "/v1/apps").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let list: AppList = serde_json::from_str(&body).unwrap();
    let want: Vec<AppStatus> = fake.apps().into_iter().map(|a| a.status).collect();
    assert_eq!(list.apps, want);

    let (status, head, body) = get(address, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    for line in [
        "appvisor_app_up{app=\"shop\"} 1",
        "appvisor_app_up{app=\"blog\"} 0",
        "appvisor_app_state{app=\"blog\",state=\"fatal\"} 1",
        "appvisor_app_restarts_total{app=\"shop\"} 2",
        "appvisor_control_requests_total{action=\"restart\",outcome=\"ok\"} 4",
    ] {
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }

    // Read at scrape time: a change shows on the next scrape.
    fake.apps.lock().unwrap()[1].status.restarts = 3;
    let (_, _, body) = get(address, "/metrics").await;
    assert!(
        body.contains("appvisor_app_restarts_total{app=\"shop\"} 3\n"),
        "{body}"
    );
}

#[tokio::test]
async fn refuses_what_is_not_a_read() {
    let address = start(Arc::new(Fake::default())).await;
    let cases = [
        (
            "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            405,
            "/metrics takes GET, not POST (the status server is read-only)",
        ),
        (
            "GET /v1/apps HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
            400,
            "the status server accepts no request body",
        ),
        (
            "GET /v1/apps/shop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            404,
            "no route /v1/apps/shop (the status server serves /healthz, /v1/apps and /metrics)",
        ),
    ];
    for (request, want_status, want_message) in cases {
        let (status, _, body) = raw(address, request).await;
        assert_eq!(status, want_status, "{request}");
        let error: appvisor_protocol::ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(error.error.message, want_message);
    }
}

#[tokio::test]
async fn caps_concurrent_connections() {
    let address = start(Arc::new(Fake::default())).await;
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(TcpStream::connect(address).await.unwrap());
    }
    // Let the server accept every idle connection before the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = get(address, "/healthz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("too many status connections, try again"),
        "{body}"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(address, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_head_timeout() {
    let address = start(Arc::new(Fake::default())).await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(
        HEAD_TIMEOUT + Duration::from_secs(3),
        stream.read_to_end(&mut bytes),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after the head timeout"
    );
}
