//! HTTP and TCP readiness probes: one attempt each, and a loop retrying
//! them until a deadline. Plain `http://` only; a probe talks to the app on
//! this host, not to the world.
//!
//! An instance that has a private probe socket (`listen::ProbeSocket`) is
//! probed through it: the url's path and `Host` go over that socket, so
//! only that instance can answer; a `tcp` probe through it passes once the
//! instance accepts the connection and answers or closes it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::config::spec::Probe;

/// Pause after the first failed attempt; grows by half each time.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// Bounds of one attempt inside [`wait_until_ready`]: an attempt gets the
/// time left before the deadline, but at least `MIN_ATTEMPT` (so there is a
/// last try at the deadline) and at most `MAX_ATTEMPT` (so a hung attempt
/// does not use up the whole start timeout).
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
const MAX_ATTEMPT: Duration = Duration::from_secs(5);

/// Why one probe attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("invalid probe url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("GET {url} failed")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    #[error("GET {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{what} timed out after {}", humantime::format_duration(*after))]
    TimedOut { what: String, after: Duration },
}

/// What to probe: the app's configured [`Probe`], and the way to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub probe: Probe,
    /// An instance's private probe socket. Through it, an http probe sends
    /// the url's path with its `Host`; a tcp probe passes once a connection
    /// is accepted and then answered or closed by the app (the daemon holds
    /// the socket listening, so connecting alone proves nothing). Without
    /// it, the url or address itself.
    pub via: Option<PathBuf>,
}

impl Check {
    /// One attempt.
    pub async fn probe(&self, timeout_each: Duration) -> Result<(), ProbeError> {
        match (&self.probe, &self.via) {
            (Probe::Http(url), None) => probe_http(url, timeout_each).await,
            (Probe::Tcp(addr), None) => probe_tcp(*addr, timeout_each).await,
            (Probe::Http(url), Some(socket)) => probe_http_via(url, socket, timeout_each).await,
            (Probe::Tcp(_), Some(socket)) => probe_accept_via(socket, timeout_each).await,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.probe, &self.via) {
            (Probe::Http(url), None) => write!(f, "GET {url}"),
            (Probe::Tcp(addr), None) => write!(f, "connect to {addr}"),
            (Probe::Http(url), Some(socket)) => {
                write!(f, "GET {url} through {}", socket.display())
            }
            (Probe::Tcp(_), Some(socket)) => {
                write!(f, "a connection through {}", socket.display())
            }
        }
    }
}

/// Probes `check` until it succeeds or `deadline` passes: first 100 ms
/// apart, then growing to 500 ms. Always makes at least one attempt and a
/// last one at the deadline; on failure returns the last attempt's error.
/// Cancel-safe: drop the future to stop probing (e.g. the process exited).
pub async fn wait_until_ready(check: Check, deadline: Instant) -> Result<(), ProbeError> {
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match check.probe(left.clamp(MIN_ATTEMPT, MAX_ATTEMPT)).await {
            Ok(()) => {
                tracing::debug!(check = %check, attempt, "ready");
                return Ok(());
            }
            Err(error) => error,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(error);
        }
        tracing::debug!(check = %check, attempt, error = %error, "not ready yet");
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 3 / 2).min(MAX_PAUSE);
        attempt += 1;
    }
}

/// One `GET url` over HTTP/1.1; a 2xx status is success.
pub async fn probe_http(url: &str, timeout_each: Duration) -> Result<(), ProbeError> {
    let target = HttpTarget::parse(url)?;
    tokio::time::timeout(timeout_each, get(url, &target))
        .await
        .unwrap_or_else(|_elapsed| {
            Err(ProbeError::TimedOut {
                what: format!("GET {url}"),
                after: timeout_each,
            })
        })
}

/// One `GET` of `url`'s path with its `Host` through the Unix socket at
/// `socket`; a 2xx status is success.
pub async fn probe_http_via(
    url: &str,
    socket: &Path,
    timeout_each: Duration,
) -> Result<(), ProbeError> {
    let target = HttpTarget::parse(url)?;
    let attempt = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| ProbeError::Connect {
                target: socket.display().to_string(),
                source,
            })?;
        get_over(stream, url, &target).await
    };
    tokio::time::timeout(timeout_each, attempt)
        .await
        .unwrap_or_else(|_elapsed| {
            Err(ProbeError::TimedOut {
                what: format!("GET {url} through {}", socket.display()),
                after: timeout_each,
            })
        })
}

/// One connection through the Unix socket at `socket`, half-closed at
/// once; success when the app answers anything or closes its end (an app
/// server that accepted it reads end-of-file and closes).
pub async fn probe_accept_via(socket: &Path, timeout_each: Duration) -> Result<(), ProbeError> {
    let target = socket.display().to_string();
    let attempt = async {
        let connect_error = |source| ProbeError::Connect {
            target: target.clone(),
            source,
        };
        let mut stream = UnixStream::connect(socket).await.map_err(connect_error)?;
        stream.shutdown().await.map_err(connect_error)?;
        let mut byte = [0u8; 1];
        // EOF or a byte: someone accepted and dealt with the connection.
        stream.read(&mut byte).await.map_err(connect_error)?;
        Ok(())
    };
    tokio::time::timeout(timeout_each, attempt)
        .await
        .unwrap_or_else(|_elapsed| {
            Err(ProbeError::TimedOut {
                what: format!("a connection through {target}"),
                after: timeout_each,
            })
        })
}

/// One TCP connection to `addr`, closed at once.
pub async fn probe_tcp(addr: SocketAddr, timeout_each: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout_each, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(source)) => Err(ProbeError::Connect {
            target: addr.to_string(),
            source,
        }),
        Err(_elapsed) => Err(ProbeError::TimedOut {
            what: format!("connect to {addr}"),
            after: timeout_each,
        }),
    }
}

/// Where and what to `GET`, taken apart from the URL.
#[derive(Debug, PartialEq, Eq)]
struct HttpTarget {
    /// For `connect`: a name or address, IPv6 without brackets.
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority as written.
    authority: String,
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<HttpTarget, ProbeError> {
        let invalid = |reason| ProbeError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| invalid("not a url"))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid("only http:// urls can be probed"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not supported"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        Ok(HttpTarget {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or("/", |path| path.as_str())
                .to_owned(),
        })
    }

    /// `host:port` for messages, IPv6 in brackets.
    fn socket_name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

async fn get(url: &str, target: &HttpTarget) -> Result<(), ProbeError> {
    let stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| ProbeError::Connect {
            target: target.socket_name(),
            source,
        })?;
    get_over(stream, url, target).await
}

/// `GET target.path` with `Host: target.authority` over `stream`.
async fn get_over<S>(stream: S, url: &str, target: &HttpTarget) -> Result<(), ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http_error = |source| ProbeError::Http {
        url: url.to_owned(),
        source,
    };
    let (mut sender, mut connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
    let request = Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(USER_AGENT, "appvisor-probe")
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|_| ProbeError::InvalidUrl {
            url: url.to_owned(),
            reason: "not a valid request target",
        })?;
    // The connection must be driven while the request is in flight; the
    // body is not needed, so both are dropped once the status is known.
    let response = sender.send_request(request);
    tokio::pin!(response);
    let response = tokio::select! {
        biased;
        response = &mut response => response.map_err(http_error)?,
        // With `connection: close` the connection may finish in the same
        // poll that delivers the response: collect it, or the cause.
        closed = &mut connection => match response.await {
            Ok(response) => response,
            Err(error) => return Err(http_error(closed.err().unwrap_or(error))),
        },
    };
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ProbeError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    use super::*;

    /// Serves `answers` in order, one connection each, then stops; returns
    /// the address and the request heads it saw.
    fn serve(answers: &[&'static str]) -> (SocketAddr, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = answers.to_vec();
        let server = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for answer in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                reader.get_mut().write_all(answer.as_bytes()).unwrap();
                heads.push(head);
            }
            heads
        });
        (addr, server)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";

    /// An address nothing listens on.
    fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    /// The error and its causes, as a state reason would show them.
    fn chain(error: &ProbeError) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    }

    #[test]
    fn parses_probe_urls() {
        let target = |host: &str, port, authority: &str, path: &str| HttpTarget {
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        };
        let good = [
            (
                "http://127.0.0.1:8001/health",
                target("127.0.0.1", 8001, "127.0.0.1:8001", "/health"),
            ),
            (
                "http://localhost",
                target("localhost", 80, "localhost", "/"),
            ),
            (
                "http://[::1]:9000/a?b=c",
                target("::1", 9000, "[::1]:9000", "/a?b=c"),
            ),
        ];
        for (url, want) in good {
            assert_eq!(HttpTarget::parse(url).unwrap(), want, "{url}");
        }
        assert_eq!(target("::1", 1, "", "").socket_name(), "[::1]:1");

        let bad = [
            (
                "https://127.0.0.1/health",
                "only http:// urls can be probed",
            ),
            ("/health", "only http:// urls can be probed"),
            ("not a url", "not a url"),
            ("http://user:pw@host/", "user information is not supported"),
        ];
        for (url, reason) in bad {
            assert_eq!(
                HttpTarget::parse(url).unwrap_err().to_string(),
                format!("invalid probe url {url:?}: {reason}")
            );
        }
    }

    #[tokio::test]
    async fn http_probe_accepts_2xx_and_sends_host() {
        let (addr, server) = serve(&[OK]);
        let url = format!("http://{addr}/health?x=1");
        probe_http(&url, Duration::from_secs(2)).await.unwrap();
        let heads = server.join().unwrap();
        let head = heads[0].to_ascii_lowercase();
        assert!(head.starts_with("get /health?x=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn http_probe_reports_the_status() {
        let (addr, server) = serve(&[UNAVAILABLE]);
        let url = format!("http://{addr}/health");
        let error = probe_http(&url, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(error.to_string(), format!("GET {url} answered 503"));
        server.join().unwrap();
    }

    #[tokio::test]
    async fn http_probe_reports_refused_connections() {
        let addr = closed_port();
        let url = format!("http://{addr}/health");
        let error = probe_http(&url, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(
            chain(&error),
            format!("cannot connect to {addr}: Connection refused (os error 111)")
        );
    }

    #[tokio::test]
    async fn http_probe_times_out_on_silence() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let error = probe_http(&url, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("GET {url} timed out after 200ms")
        );
    }

    #[tokio::test]
    async fn http_probe_reports_garbage() {
        let (addr, server) = serve(&["SSH-2.0-OpenSSH\r\n\r\n"]);
        let url = format!("http://{addr}/");
        let error = probe_http(&url, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(error.to_string(), format!("GET {url} failed"));
        assert!(matches!(error, ProbeError::Http { .. }), "{error:?}");
        server.join().unwrap();
    }

    #[tokio::test]
    async fn tcp_probe_connects_or_reports() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        probe_tcp(listener.local_addr().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();

        let addr = closed_port();
        let error = probe_tcp(addr, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            chain(&error),
            format!("cannot connect to {addr}: Connection refused (os error 111)")
        );
    }

    #[tokio::test]
    async fn waits_until_the_app_answers() {
        let (addr, server) = serve(&[UNAVAILABLE, UNAVAILABLE, OK]);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(5);
        wait_until_ready(direct(Probe::Http(format!("http://{addr}/"))), deadline)
            .await
            .unwrap();
        // Two pauses: 100 ms, then 150 ms.
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_with_the_last_error() {
        let addr = closed_port();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(700);
        let error = wait_until_ready(direct(Probe::Tcp(addr)), deadline)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(1500),
            "{elapsed:?}"
        );
        assert_eq!(error.to_string(), format!("cannot connect to {addr}"));
    }

    /// A Unix socket serving `answer` to one connection, or (`None`)
    /// accepting it and closing at once; returns the request head.
    fn serve_unix(dir: &Path, answer: Option<&'static str>) -> (PathBuf, JoinHandle<String>) {
        let path = dir.join("probe.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let Some(answer) = answer else {
                return head;
            };
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            reader.get_mut().write_all(answer.as_bytes()).unwrap();
            head
        });
        (path, server)
    }

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "appvisor-probe-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn http_through_a_socket_sends_the_urls_path_and_host() {
        let dir = temp_dir();
        let (path, server) = serve_unix(&dir, Some(OK));
        probe_http_via(
            "http://shop.example:8001/health",
            &path,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        let head = server.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /health http/1.1\r\n"), "{head}");
        assert!(head.contains("host: shop.example:8001\r\n"), "{head}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn accept_through_a_socket_needs_the_app_to_accept() {
        let dir = temp_dir();
        // Listening, never accepting: the probe times out.
        let path = dir.join("idle.sock");
        let _idle = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let error = probe_accept_via(&path, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, ProbeError::TimedOut { .. }), "{error:?}");
        // Accepting and closing: ready.
        let (path, server) = serve_unix(&dir, None);
        probe_accept_via(&path, Duration::from_secs(2))
            .await
            .unwrap();
        server.join().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn direct(probe: Probe) -> Check {
        Check { probe, via: None }
    }

    /// The log line and the failure reason name a check this way.
    #[test]
    fn checks_describe_their_target_and_way() {
        let addr: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let url = "http://127.0.0.1:8001/health".to_owned();
        let socket = PathBuf::from("/run/appvisor/probe/shop.i1");
        let cases = [
            (
                direct(Probe::Http(url.clone())),
                "GET http://127.0.0.1:8001/health",
            ),
            (direct(Probe::Tcp(addr)), "connect to 127.0.0.1:8001"),
            (
                Check {
                    probe: Probe::Http(url),
                    via: Some(socket.clone()),
                },
                "GET http://127.0.0.1:8001/health through /run/appvisor/probe/shop.i1",
            ),
            (
                Check {
                    probe: Probe::Tcp(addr),
                    via: Some(socket),
                },
                "a connection through /run/appvisor/probe/shop.i1",
            ),
        ];
        for (check, want) in cases {
            assert_eq!(check.to_string(), want);
        }
    }
}
