//! Response bodies: a whole buffer, or a stream fed by a task (logs -f, events).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::io;

use appvisor_protocol::{Event, LogStream};
use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{broadcast, mpsc, Semaphore};

use crate::logs::{AppLogs, Chunk, Interleave, LogSnapshot, Selection, Stream};

/// Chunks a streaming body may queue before its producer waits for the client.
const STREAM_QUEUE: usize = 16;
/// Pieces of a log body queued for a slow client: with at most
/// [`crate::logs::PIECE`] bytes each (a follower's chunk may be up to
/// [`crate::logs::READ_CHUNK`]), this bounds what one `logs` request holds.
const LOG_QUEUE: usize = 2;

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
        Self::channel_of(STREAM_QUEUE)
    }

    /// [`ResponseBody::channel`] queueing at most `capacity` chunks.
    pub fn channel_of(capacity: usize) -> (mpsc::Sender<Bytes>, ResponseBody) {
        let (tx, rx) = mpsc::channel(capacity);
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
        match &self.0 {
            Inner::Full(bytes) => bytes.is_none(),
            Inner::Stream(_) => false,
        }
    }

    /// Exact for a whole body, so that it is sent with its length rather
    /// than chunked.
    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}

/// Log reads whose file I/O runs at once, daemon-wide: the rest wait their
/// turn. With each read's fixed budget (see [`crate::logs::PIECE`]), this
/// bounds the blocking threads and memory that operators' `logs` requests
/// can take together, however many they send.
static LOG_READS: Semaphore = Semaphore::const_new(4);

/// The last `lines` lines of an app's selected streams, then, with
/// `follow`, what it writes next until the client goes away. Raw bytes:
/// the client decides how to show them.
pub fn log_body(logs: Arc<AppLogs>, stream: LogStream, lines: usize, follow: bool) -> ResponseBody {
    let selection = match stream {
        LogStream::Both => Selection::Both,
        LogStream::Stdout => Selection::Only(Stream::Stdout),
        LogStream::Stderr => Selection::Only(Stream::Stderr),
    };
    let (tx, body) = ResponseBody::channel_of(LOG_QUEUE);
    tokio::spawn(async move {
        // One instant splits the history from what follows, so every byte
        // is shown exactly once.
        let taken = if follow {
            logs.snapshot_and_subscribe(selection)
                .map(|(snapshot, live)| (snapshot, Some(live)))
        } else {
            logs.snapshot(selection).map(|snapshot| (snapshot, None))
        };
        drop(logs);
        let (snapshot, live) = match taken {
            Ok(taken) => taken,
            Err(err) => {
                let _ = tx.send(read_error(&err)).await;
                return;
            }
        };
        let interleave = match send_history(snapshot, lines, &tx).await {
            Some(interleave) => interleave,
            None => return,
        };
        if let Some(live) = live {
            follow_live(live, selection, interleave, &tx).await;
        }
    });
    body
}

/// Sends the history in pieces; the interleave state to go on with, or
/// `None` when the client went away or the files could not be read.
async fn send_history(
    snapshot: LogSnapshot,
    lines: usize,
    tx: &mpsc::Sender<Bytes>,
) -> Option<Interleave> {
    let mut reader = match blocking_read(move || snapshot.last_lines(lines)).await {
        Ok(reader) => reader,
        Err(err) => {
            let _ = tx.send(read_error(&err)).await;
            return None;
        }
    };
    loop {
        let (piece, rest) = match blocking_read(move || Ok((reader.next_piece(), reader))).await {
            Ok(step) => step,
            Err(err) => {
                let _ = tx.send(read_error(&err)).await;
                return None;
            }
        };
        reader = rest;
        match piece {
            Ok(Some(piece)) => tx.send(piece).await.ok()?,
            Ok(None) => return Some(reader.interleave()),
            Err(err) => {
                let _ = tx.send(read_error(&err)).await;
                return None;
            }
        }
    }
}

/// Runs one bounded piece of file I/O on the blocking pool, within the
/// daemon-wide [`LOG_READS`].
async fn blocking_read<T: Send + 'static>(
    read: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    // The semaphore is static and never closed.
    let _turn = LOG_READS.acquire().await;
    tokio::task::spawn_blocking(read)
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the log read stopped")))
}

/// Sends live chunks of the selected streams until the client goes away or
/// the app's logs are dropped.
async fn follow_live(
    mut live: broadcast::Receiver<Chunk>,
    selection: Selection,
    mut interleave: Interleave,
    tx: &mpsc::Sender<Bytes>,
) {
    loop {
        let chunk = match live.recv().await {
            Ok((stream, chunk)) if selection.includes(stream) => {
                if interleave.push(stream, &chunk) {
                    let mut with_break = BytesMut::with_capacity(chunk.len() + 1);
                    with_break.put_u8(b'\n');
                    with_break.extend_from_slice(&chunk);
                    with_break.freeze()
                } else {
                    chunk
                }
            }
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                interleave = Interleave::default();
                Bytes::from(format!(
                    "\n(appvisord: this follower fell behind; {missed} chunks not shown)\n"
                ))
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

fn read_error(err: &io::Error) -> Bytes {
    Bytes::from(format!("(appvisord: cannot read the log files: {err})\n"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_whole_body_is_sent_with_its_length() {
        let body = ResponseBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let (_tx, stream) = ResponseBody::channel();
        assert_eq!(stream.size_hint().exact(), None);
    }
}
