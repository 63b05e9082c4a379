//! Response bodies: a whole buffer, or a stream fed by a task (logs -f, events).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use appvisor_protocol::{Event, LogStream};
use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::{broadcast, mpsc};

use crate::logs::{AppLogs, Stream};

/// Chunks a streaming body may queue before its producer waits for the client.
const STREAM_QUEUE: usize = 16;

/// The body of every control response.
#[derive(Debug)]
pub struct ResponseBody(Inner);

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody(Inner::Full(Some(bytes.into())))
    }

    /// A body fed by whoever holds the sender; it ends when the sender is
    /// dropped, and the sender sees an error once the client has gone.
    pub fn channel() -> (mpsc::Sender<Bytes>, ResponseBody) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        (tx, ResponseBody(Inner::Stream(rx)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().0 {
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Inner::Full(None))
    }
}

/// The last `lines` lines of an app's stream, then, with `follow`, what it
/// writes next until the client goes away.
pub fn log_body(logs: Arc<AppLogs>, stream: LogStream, lines: usize, follow: bool) -> ResponseBody {
    let stream = match stream {
        LogStream::Stdout => Stream::Stdout,
        LogStream::Stderr => Stream::Stderr,
    };
    let (tx, body) = ResponseBody::channel();
    tokio::spawn(async move {
        // One instant splits the history from what follows, so every byte
        // is shown exactly once.
        let (last, mut live) = if follow {
            match logs.snapshot_and_subscribe(stream) {
                Ok((snapshot, live)) => (
                    tokio::task::spawn_blocking(move || snapshot.last_lines(lines)).await,
                    Some(live),
                ),
                Err(err) => (Ok(Err(err)), None),
            }
        } else {
            let reader = logs.clone();
            (
                tokio::task::spawn_blocking(move || reader.read_last_lines(stream, lines)).await,
                None,
            )
        };
        let text = match last {
            Ok(Ok(lines)) => lines.into_iter().fold(String::new(), |mut acc, line| {
                acc.push_str(&line);
                acc.push('\n');
                acc
            }),
            Ok(Err(err)) => format!("(cannot read the log files: {err})\n"),
            Err(_) => String::new(),
        };
        if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
        let Some(live) = live.as_mut() else { return };
        loop {
            let chunk = match live.recv().await {
                Ok(chunk) => chunk,
                Err(broadcast::error::RecvError::Lagged(missed)) => Bytes::from(format!(
                    "\n(appvisord: this follower fell behind; {missed} chunks not shown)\n"
                )),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    body
}

/// Events as JSON lines until the client goes away.
pub fn event_body(mut events: broadcast::Receiver<Event>) -> ResponseBody {
    let (tx, body) = ResponseBody::channel();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let mut line = serde_json::to_vec(&event).expect("events serialize");
            line.push(b'\n');
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    });
    body
}
