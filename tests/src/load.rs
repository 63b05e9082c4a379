//! What clients see while an action happens: a load generator that counts
//! every request it sent and how each failed, and slow requests held in
//! flight across an action to see whether the server finishes or drops
//! them.
//!
//! Both are real HTTP/1.0 clients over `std::net::TcpStream` (a new
//! connection per request, as gunicorn's sync workers and uWSGI's
//! http-socket close after each answer). They talk only to 127.0.0.1, and
//! every loop is bounded in time and in count.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long one request may take before it counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// No client thread sends more than this many requests, whatever the
/// duration: the loop is bounded in count as well as in time.
const MAX_REQUESTS_PER_CLIENT: u64 = 100_000;
/// Bytes of an answer read at most: the test apps answer a few dozen.
const MAX_ANSWER: usize = 64 * 1024;

/// How one request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// connect(2) was refused: nothing listened.
    Refused,
    /// The connection was reset or closed before a whole answer came.
    Dropped(String),
    /// No whole answer within [`REQUEST_TIMEOUT`].
    Timeout,
    /// An answer that is not 2xx.
    Status(u16),
    /// Anything else (unreadable answer, other socket errors).
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => write!(f, "connection refused"),
            Failure::Dropped(how) => write!(f, "dropped: {how}"),
            Failure::Timeout => write!(f, "timed out after {REQUEST_TIMEOUT:?}"),
            Failure::Status(code) => write!(f, "status {code}"),
            Failure::Other(what) => write!(f, "{what}"),
        }
    }
}

fn classify(error: &io::Error) -> Failure {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Timeout,
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof => Failure::Dropped(error.to_string()),
        _ => Failure::Other(error.to_string()),
    }
}

/// Connects to 127.0.0.1:`port` and sends `GET path` as HTTP/1.0, with
/// [`REQUEST_TIMEOUT`] on every step.
fn send_get(port: u16, path: &str) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    Ok(stream)
}

/// Reads until EOF (at most [`MAX_ANSWER`] bytes) or until `deadline`.
fn read_answer(stream: &mut TcpStream, into: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                if into.len() > MAX_ANSWER {
                    return Err(io::Error::other("answer longer than 64 KiB"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The status code and body of a raw HTTP answer.
fn parse_answer(raw: &[u8]) -> Result<(u16, String), Failure> {
    let text = String::from_utf8_lossy(raw);
    if text.is_empty() {
        return Err(Failure::Dropped("closed without an answer".to_owned()));
    }
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(Failure::Dropped(format!("closed mid-answer: {text:?}")));
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Other(format!("not HTTP: {text:?}")))?;
    Ok((status, body.to_owned()))
}

/// One whole request: `Ok(body)` for a 2xx answer read to EOF.
fn request(port: u16, path: &str) -> Result<String, Failure> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut stream = send_get(port, path).map_err(|e| classify(&e))?;
    let mut raw = Vec::new();
    read_answer(&mut stream, &mut raw, deadline).map_err(|e| classify(&e))?;
    match parse_answer(&raw)? {
        (status, body) if (200..300).contains(&status) => Ok(body),
        (status, _) => Err(Failure::Status(status)),
    }
}

/// A failed request of a [`Load`], timed from the start of the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRequest {
    pub sent_at: Duration,
    pub failed_at: Duration,
    pub failure: Failure,
}

/// What a [`Load`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failed: Vec<FailedRequest>,
    pub duration: Duration,
    /// The longest any request took, failed ones included.
    pub max_latency: Duration,
}

impl LoadReport {
    /// Failures of one kind.
    pub fn count(&self, kind: impl Fn(&Failure) -> bool) -> usize {
        self.failed.iter().filter(|f| kind(&f.failure)).count()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1?}: {} ok, {} failed; longest {:.0?}",
            self.sent,
            self.duration,
            self.ok,
            self.failed.len(),
            self.max_latency
        )?;
        for failed in self.failed.iter().take(20) {
            write!(
                f,
                "\n    sent at {:.2?}, failed at {:.2?}: {}",
                failed.sent_at, failed.failed_at, failed.failure
            )?;
        }
        if self.failed.len() > 20 {
            write!(f, "\n    ... and {} more", self.failed.len() - 20)?;
        }
        Ok(())
    }
}

/// `clients` threads sending `GET path` one after another until stopped.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    /// 2xx answers so far, of every client.
    answered: Arc<AtomicUsize>,
    started: Instant,
    limit: Duration,
    clients: Vec<JoinHandle<LoadReport>>,
}

impl Load {
    /// Starts the load on 127.0.0.1:`port`. It stops at [`Load::finish`],
    /// or by itself after `limit`.
    pub fn start(port: u16, path: &str, clients: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let answered = Arc::clone(&answered);
                let path = path.to_owned();
                thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || client(port, &path, &stop, &answered, started, limit))
                    .expect("spawning a load thread")
            })
            .collect();
        Load {
            stop,
            answered,
            started,
            limit,
            clients,
        }
    }

    /// Waits until the load is under way: `n` requests answered with a
    /// 2xx status. Panics after `deadline`, saying how many were.
    pub fn wait_until_answered(&self, n: usize, deadline: Duration) {
        let answered = || self.answered.load(Ordering::Relaxed);
        assert!(
            crate::poll_until(deadline, || answered() >= n),
            "the load had {} of {n} requests answered after {deadline:?}: is the app serving?",
            answered()
        );
    }

    /// Stops the load, waits for the requests in flight, and reports.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for handle in self.clients {
            let part = handle.join().expect("a load thread panicked");
            total.sent += part.sent;
            total.ok += part.ok;
            total.failed.extend(part.failed);
            total.max_latency = total.max_latency.max(part.max_latency);
        }
        total.failed.sort_by_key(|f| f.sent_at);
        total.duration = self.started.elapsed().min(self.limit + REQUEST_TIMEOUT);
        total
    }
}

fn client(
    port: u16,
    path: &str,
    stop: &AtomicBool,
    answered: &AtomicUsize,
    started: Instant,
    limit: Duration,
) -> LoadReport {
    let mut report = LoadReport::default();
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < limit
        && report.sent < MAX_REQUESTS_PER_CLIENT
    {
        let sent_at = started.elapsed();
        let result = request(port, path);
        let failed_at = started.elapsed();
        report.sent += 1;
        report.max_latency = report.max_latency.max(failed_at - sent_at);
        match result {
            Ok(_) => {
                report.ok += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                report.failed.push(FailedRequest {
                    sent_at,
                    failed_at,
                    failure,
                });
                // A refused connection comes back at once: do not spin.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    report
}

/// Runs `action` while `clients` threads load 127.0.0.1:`port` with
/// `GET path`: `before` of load first, then the action, then `after`.
pub fn under_load<T>(
    port: u16,
    path: &str,
    clients: usize,
    (before, after): (Duration, Duration),
    action: impl FnOnce() -> T,
) -> (T, LoadReport) {
    let load = Load::start(
        port,
        path,
        clients,
        before + after + Duration::from_secs(120),
    );
    thread::sleep(before);
    let result = action();
    thread::sleep(after);
    (result, load.finish())
}

/// How a request held in flight across an action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The whole answer came: the server let the request finish.
    Completed,
    /// The server began answering, then the answer was cut.
    Dropped(Failure),
}

/// Slow requests (`GET /slow?secs=N` of the test apps) that the server has
/// begun answering: each has read the first line, `start PID`, of its
/// answer, so each is in flight in a worker.
#[derive(Debug)]
pub struct InFlight {
    requests: Vec<JoinHandle<Ending>>,
    /// The worker pid of each request, from its first line.
    pub workers: Vec<u32>,
}

impl InFlight {
    /// Sends `n` requests for `GET /slow?secs=SECS` at once and waits (at
    /// most 30 s) until the server has begun answering each of them.
    pub fn open(port: u16, n: usize, secs: u32) -> InFlight {
        let (tx, rx) = mpsc::channel();
        let requests = (0..n)
            .map(|i| {
                let tx = tx.clone();
                thread::Builder::new()
                    .name(format!("in-flight-{i}"))
                    .spawn(move || slow_request(port, secs, &tx))
                    .expect("spawning an in-flight request")
            })
            .collect();
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut workers = Vec::new();
        while workers.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(pid)) => workers.push(pid),
                Ok(Err(failure)) => panic!(
                    "a slow request to 127.0.0.1:{port} failed before the server answered: {failure}"
                ),
                Err(_) => panic!(
                    "timed out after 30s waiting for the server on 127.0.0.1:{port} to begin \
                     answering {n} slow requests ({} did)",
                    workers.len()
                ),
            }
        }
        InFlight { requests, workers }
    }

    /// Waits for every request to end (each within its `secs` plus
    /// [`REQUEST_TIMEOUT`]).
    pub fn finish(self) -> Vec<Ending> {
        self.requests
            .into_iter()
            .map(|h| h.join().expect("an in-flight request thread panicked"))
            .collect()
    }
}

fn slow_request(port: u16, secs: u32, started: &mpsc::Sender<Result<u32, Failure>>) -> Ending {
    let deadline = Instant::now() + Duration::from_secs(secs.into()) + REQUEST_TIMEOUT;
    let mut stream = match send_get(port, &format!("/slow?secs={secs}")) {
        Ok(stream) => stream,
        Err(e) => {
            let _ = started.send(Err(classify(&e)));
            return Ending::Dropped(classify(&e));
        }
    };
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    // Until the first line of the body: the headers and `start PID\n`.
    let pid = loop {
        let text = String::from_utf8_lossy(&raw);
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            if let Some((line, _)) = body.split_once('\n') {
                let pid = line.strip_prefix("start ").and_then(|p| p.parse().ok());
                break pid;
            }
        }
        let failure = match stream.read(&mut buf) {
            Ok(0) => Failure::Dropped(format!("closed before the first line: {text:?}")),
            Ok(n) if raw.len() + n <= MAX_ANSWER => {
                raw.extend_from_slice(&buf[..n]);
                continue;
            }
            Ok(_) => Failure::Other("answer longer than 64 KiB".to_owned()),
            Err(e) => classify(&e),
        };
        let _ = started.send(Err(failure.clone()));
        return Ending::Dropped(failure);
    };
    match pid {
        Some(pid) => {
            let _ = started.send(Ok(pid));
        }
        None => {
            let failure = Failure::Other(format!(
                "not an answer of /slow: {:?}",
                String::from_utf8_lossy(&raw)
            ));
            let _ = started.send(Err(failure.clone()));
            return Ending::Dropped(failure);
        }
    }
    if let Err(e) = read_answer(&mut stream, &mut raw, deadline) {
        return Ending::Dropped(classify(&e));
    }
    match parse_answer(&raw) {
        Ok((200, body)) if body.lines().any(|l| l == "end") => Ending::Completed,
        Ok((_, body)) => Ending::Dropped(Failure::Dropped(format!(
            "the answer ended before its last line: {body:?}"
        ))),
        Err(failure) => Ending::Dropped(failure),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A one-shot server on 127.0.0.1 that answers each connection with
    /// `answer` (after reading the request), `connections` times.
    fn serve(connections: usize, answer: &'static [u8], pause: Duration) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for _ in 0..connections {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                let (head, tail) = answer.split_at(answer.len() / 2);
                conn.write_all(head).unwrap();
                thread::sleep(pause);
                let _ = conn.write_all(tail);
            }
        });
        port
    }

    #[test]
    fn reads_answers_and_failures() {
        assert_eq!(
            parse_answer(b"HTTP/1.0 200 OK\r\n\r\nhi"),
            Ok((200, "hi".to_owned()))
        );
        assert!(matches!(parse_answer(b""), Err(Failure::Dropped(_))));
        assert!(matches!(
            parse_answer(b"HTTP/1.0 200 OK\r\nContent-"),
            Err(Failure::Dropped(_))
        ));
        let port = serve(2, b"HTTP/1.0 503 Busy\r\n\r\nno", Duration::ZERO);
        assert_eq!(request(port, "/"), Err(Failure::Status(503)));
        assert_eq!(request(port, "/"), Err(Failure::Status(503)));
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        assert_eq!(request(port, "/"), Err(Failure::Refused));
    }

    #[test]
    fn a_slow_answer_in_flight_completes() {
        let port = serve(
            1,
            b"HTTP/1.0 200 OK\r\n\r\nstart 42\nend\n",
            Duration::from_millis(200),
        );
        let in_flight = InFlight::open(port, 1, 1);
        assert_eq!(in_flight.workers, [42]);
        assert_eq!(in_flight.finish(), [Ending::Completed]);
    }

    #[test]
    fn a_cut_answer_is_dropped() {
        // The server closes after the first line: the request was dropped.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0; 1024];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nstart 7\n").unwrap();
        });
        let in_flight = InFlight::open(port, 1, 1);
        assert_eq!(in_flight.workers, [7]);
        assert!(matches!(
            in_flight.finish()[..],
            [Ending::Dropped(Failure::Dropped(_))]
        ));
    }

    #[test]
    fn load_counts_what_it_sent() {
        let port = serve(3, b"HTTP/1.0 200 OK\r\n\r\nok", Duration::ZERO);
        let load = Load::start(port, "/", 1, Duration::from_millis(300));
        thread::sleep(Duration::from_millis(400));
        let report = load.finish();
        // 3 answers, then the listener is gone with its thread: refused
        // (or reset, for a connection that raced its close).
        assert_eq!(report.ok, 3, "{report}");
        assert_eq!(report.sent, report.ok + report.failed.len() as u64);
        assert!(
            report
                .failed
                .iter()
                .all(|f| matches!(f.failure, Failure::Refused | Failure::Dropped(_))),
            "{report}"
        );
    }
}
