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

/// Accepts on `listener` for ever, admitting each connection within
/// `server`'s caps and running `connect` on it in a task of its own, which
/// holds the connection's slot until it ends.
pub async fn serve<L, C, F>(server: Server, listener: L, connect: C)
where
    L: Listener,
    C: Fn(L::Stream, L::Peer) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let limits = ConnectionLimits::new(server.connections, server.per_uid);
    let mut accept_noise = Window::default();
    loop {
        let (stream, peer) = match listener.accept().await {
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
        let connection = connect(stream, peer);
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
    /// server's head timeout and size, until either side ends it; how it
    /// ended is logged at debug in `span`.
    pub async fn serve_http<S, Svc, B>(&self, stream: S, service: Svc, span: tracing::Span)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        Svc: HttpService<Incoming, ResBody = B>,
        B: Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.head_timeout)
            .max_buf_size(self.max_head)
            .serve_connection(TokioIo::new(stream), service);
        if let Err(err) = connection.instrument(span.clone()).await {
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
}
