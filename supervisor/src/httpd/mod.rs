//! What the control server (`control`) and the status server (`status`)
//! share: the accept loop (connection caps, backing off when accepts fail),
//! hyper's per-connection limits, the JSON error body and the raw 503 sent
//! to a client over a cap. Routes and identity stay with each server.

mod limit;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use appvisor_protocol::{ApiError, ErrorBody, ErrorCode};
use hyper::body::{Body, Incoming};
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::UCred;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use self::limit::{ConnectionLimits, Refusal};
use crate::ratelimit::{Limit, Verdict, Window};

/// How long the loop waits after a failed accept (EMFILE under a flood)
/// instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// What the accept loop logs about failed accepts.
const ACCEPT_NOISE: Limit = Limit {
    burst: 5,
    per: Duration::from_secs(10),
};

/// What is read of a refused TCP connection's request before it closes.
const REFUSED_DRAIN: usize = 16 * 1024;

/// One server's name and limits.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// `control` or `status`, in log records and refusals.
    pub name: &'static str,
    /// Connections served at once; more are answered 503 and closed.
    pub connections: usize,
    /// Connections one uid other than root may hold at once, where the
    /// listener knows uids.
    pub per_uid: Option<usize>,
    /// Time a client has to send a request head.
    pub head_timeout: Duration,
    /// Largest request head buffer (hyper's minimum is 8 KiB).
    pub max_head: usize,
}

/// A listening socket a [`Server`] accepts on.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Who connected.
    type Peer: Send + 'static;

    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Self::Peer)>> + Send;

    /// The peer's uid, where the socket tells it.
    fn uid(peer: &Self::Peer) -> Option<u32>;

    /// Answers `answer` (a whole HTTP response) and closes, spending as
    /// little as the transport allows on a connection refused.
    fn refuse(stream: Self::Stream, answer: Vec<u8>);
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    type Peer = UCred;

    async fn accept(&self) -> io::Result<(UnixStream, UCred)> {
        loop {
            let (stream, _) = UnixListener::accept(self).await?;
            match stream.peer_cred() {
                Ok(cred) => return Ok((stream, cred)),
                Err(err) => tracing::warn!(error = %err, "reading control peer credentials"),
            }
        }
    }

    fn uid(peer: &UCred) -> Option<u32> {
        Some(peer.uid())
    }

    /// Without a task: the answer fits in the socket buffer, and a Unix
    /// socket closed with the request unread still delivers it.
    fn refuse(stream: UnixStream, answer: Vec<u8>) {
        let _ = stream.try_write(&answer);
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;

    async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }

    fn uid(_: &SocketAddr) -> Option<u32> {
        None
    }

    fn refuse(stream: TcpStream, answer: Vec<u8>) {
        tokio::spawn(refuse_tcp(stream, answer));
    }
}

/// TCP resets a connection closed with data unread, and the client could
/// lose the answer: read what it sent first, within a second.
async fn refuse_tcp(mut stream: TcpStream, answer: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut left = REFUSED_DRAIN;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// Stops servers: their accept loops, then their connections, gracefully.
#[derive(Debug)]
pub struct Shutdown {
    closing: watch::Sender<bool>,
    /// Cloned into every [`Closing`]: once all are dropped, every accept
    /// loop and connection has ended.
    open: mpsc::Sender<()>,
    ended: mpsc::Receiver<()>,
}

/// What an accept loop or a connection watches to know the server is
/// shutting down; while one lives, [`Shutdown::finish`] waits for it.
#[derive(Debug, Clone)]
pub struct Closing {
    closing: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (open, ended) = mpsc::channel(1);
        Shutdown {
            closing: watch::Sender::new(false),
            open,
            ended,
        }
    }
}

impl Shutdown {
    /// What a server started now watches.
    pub fn closing(&self) -> Closing {
        Closing {
            closing: self.closing.subscribe(),
            _open: self.open.clone(),
        }
    }

    /// Closes every listener, and asks every connection to close once its
    /// request in flight (if any) is answered.
    pub fn begin(&self) {
        self.closing.send_replace(true);
    }

    /// Waits, at most `grace`, for every connection to end: a follower of
    /// logs or events does not end by itself.
    pub async fn finish(self, grace: Duration) {
        self.begin();
        let Shutdown {
            open, mut ended, ..
        } = self;
        drop(open);
        let _ = tokio::time::timeout(grace, ended.recv()).await;
    }
}

impl Closing {
    /// A `Closing` that never closes, for a server that runs until its
    /// task is dropped.
    pub fn never() -> Closing {
        Shutdown::default().closing()
    }

    /// Returns once the server is shutting down (never, if its
    /// [`Shutdown`] is gone without asking).
    async fn wait(&mut self) {
        if self.closing.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Accepts on `listener` until `closing`, admitting each connection within
/// `server`'s caps and running `connect` on it in a task of its own, which
/// holds the connection's slot until it ends.
pub async fn serve<L, C, F>(server: Server, listener: L, mut closing: Closing, connect: C)
where
    L: Listener,
    C: Fn(L::Stream, L::Peer, Closing) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limits = ConnectionLimits::new(server.connections, server.per_uid);
    let mut accept_noise = Window::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = closing.wait() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning,
                // and do not log each of them.
                if let Verdict::Log { suppressed } =
                    accept_noise.check(ACCEPT_NOISE, Instant::now())
                {
                    tracing::warn!(error = %err, suppressed, "accepting a {} connection", server.name);
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let uid = L::uid(&peer);
        let slot = match limits.admit(uid) {
            Ok(slot) => slot,
            Err(refusal) => {
                // debug, not warn: a flood must not become a log flood.
                tracing::debug!(
                    peer.uid = uid,
                    ?refusal,
                    "{} connection refused",
                    server.name
                );
                L::refuse(stream, busy_response(&server.refusal(refusal)));
                continue;
            }
        };
        let connection = connect(stream, peer, closing.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection.await;
        });
    }
}

impl Server {
    fn refusal(&self, refusal: Refusal) -> String {
        match (refusal, self.per_uid) {
            (Refusal::UidFull, Some(per_uid)) => format!(
                "too many {} connections from your user (at most {per_uid}), try again",
                self.name
            ),
            _ => format!("too many {} connections, try again", self.name),
        }
    }

    /// Serves HTTP/1.1 on one connection with `service`, held to the
    /// server's head timeout and size, until either side ends it or, once
    /// `closing`, its request in flight is answered; how it ended is
    /// logged at debug in `span`.
    pub async fn serve_http<S, Svc, B>(
        &self,
        stream: S,
        service: Svc,
        mut closing: Closing,
        span: tracing::Span,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        Svc: HttpService<Incoming, ResBody = B>,
        B: Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            .max_buf_size(self.max_head)
            .serve_connection(TokioIo::new(stream), service)
            .instrument(span.clone());
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = closing.wait() => {
                connection.as_mut().inner_pin_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(err) = ended {
            span.in_scope(|| tracing::debug!(error = %err, "{} connection ended", self.name));
        }
    }
}

/// `{"error":{"code":…,"message":…}}`.
pub fn error_json(err: &ApiError) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: err.clone() }).expect("error bodies serialize")
}

/// A whole HTTP/1.1 503 response, head and body, for a connection refused
/// before any request was read.
pub fn busy_response(message: &str) -> Vec<u8> {
    let body = error_json(&ApiError::new(ErrorCode::Unavailable, message));
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_response_is_a_complete_http_answer() {
        let answer = String::from_utf8(busy_response("busy")).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(body, r#"{"error":{"code":"unavailable","message":"busy"}}"#);
    }

    const TEST_SERVER: Server = Server {
        name: "test",
        connections: 4,
        per_uid: None,
        head_timeout: Duration::from_secs(5),
        max_head: 16 * 1024,
    };

    /// A server whose one route answers "done" after `delay`, and tells
    /// `started` when a request arrives.
    async fn slow_server(
        delay: Duration,
        closing: Closing,
        started: mpsc::Sender<()>,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            TEST_SERVER,
            listener,
            closing,
            move |stream, _peer, closing| {
                let started = started.clone();
                let service = hyper::service::service_fn(move |_request| {
                    let started = started.clone();
                    async move {
                        let _ = started.send(()).await;
                        tokio::time::sleep(delay).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"done")),
                        ))
                    }
                });
                async move {
                    TEST_SERVER
                        .serve_http(stream, service, closing, tracing::Span::none())
                        .await
                }
            },
        ));
        address
    }

    #[tokio::test]
    async fn shutdown_answers_the_request_in_flight_then_closes() {
        let shutdown = Shutdown::default();
        let (started, mut request_arrived) = mpsc::channel(1);
        let address = slow_server(Duration::from_millis(300), shutdown.closing(), started).await;
        let mut client = TcpStream::connect(address).await.unwrap();
        // Keep-alive: only the shutdown may close this connection.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        request_arrived.recv().await.unwrap();
        shutdown.begin();

        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("the connection closes once its request is answered")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");

        tokio::time::timeout(
            Duration::from_secs(5),
            shutdown.finish(Duration::from_secs(10)),
        )
        .await
        .expect("finish returns once every connection ended, not after its grace");
        let refused = TcpStream::connect(address).await;
        assert!(
            refused.is_err(),
            "a new connection was accepted after shutdown"
        );
    }
}
