//! A small HTTP/1.1 client for the control socket, one connection a request.

use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use crate::{ApiError, ErrorBody, ErrorCode};

/// Why a request did not produce the answer the caller wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached: the daemon is not running, or the
    /// path is wrong.
    #[error("cannot reach appvisord at {}: {}", socket.display(), describe_connect_error(source))]
    Connect { socket: PathBuf, source: io::Error },
    /// The connection broke or the daemon spoke something other than HTTP.
    #[error("talking to appvisord at {}: {source}", socket.display())]
    Http {
        socket: PathBuf,
        source: hyper::Error,
    },
    /// The daemon answered with an error.
    #[error("{error}")]
    Api { status: u16, error: ApiError },
    /// The daemon did not answer in time: it accepted the connection (the
    /// kernel does that for it) but is stopped, hung or overloaded.
    #[error("appvisord at {} did not answer within {waited:?} (is it stopped or overloaded?)", socket.display())]
    Timeout { socket: PathBuf, waited: Duration },
    /// The daemon's answer was not the expected JSON.
    #[error("unexpected answer from appvisord ({status}): {source}")]
    Decode {
        status: u16,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The API error code, when the daemon answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

fn describe_connect_error(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file (is the daemon running?)".to_owned(),
        io::ErrorKind::ConnectionRefused => {
            "connection refused (is the daemon running?)".to_owned()
        }
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

/// Largest answer body read into a buffer of its announced length at
/// once; a longer one grows its buffer as it arrives.
const MAX_PRESIZE: usize = 16 << 20;

/// Bytes the connection reads at once, into one buffer it reuses as each
/// piece of a body is taken out ([`Client::read_body`]). hyper's default
/// doubles its reads up to 256 KiB, each into new memory: for a thousand
/// apps' statuses, five buffers mapped, faulted in page by page, copied
/// and unmapped, for one answer.
const READ_BUFFER: usize = 64 << 10;

/// A client of one control socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    /// How long the daemon may take to answer; `None`: forever.
    timeout: Option<Duration>,
}

impl Client {
    /// A client that waits for answers as long as it takes.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: None,
        }
    }

    /// The same client, giving up on a request when the daemon has not
    /// answered within `timeout` ([`ClientError::Timeout`]); `None` waits
    /// forever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Runs `request` within the timeout.
    async fn within<T>(
        &self,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match self.timeout {
            None => request.await,
            Some(waited) => {
                tokio::time::timeout(waited, request)
                    .await
                    .unwrap_or_else(|_elapsed| {
                        Err(ClientError::Timeout {
                            socket: self.socket.clone(),
                            waited,
                        })
                    })
            }
        }
    }

    /// Sends one request and returns the response with its body unread,
    /// for streams (`logs -f`, events); the timeout covers the response's
    /// head only. Error statuses become [`ClientError::Api`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.within(self.send_unbounded(method, path, body)).await
    }

    async fn send_unbounded(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.http_error(source))?;
        // The connection task ends when the response body has been read or
        // dropped; its error, if any, also surfaces through `send_request`.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "appvisord");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("a request built from a valid path and method");
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| self.http_error(source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = self.read_body(response).await?;
        Err(api_error(status, &bytes))
    }

    /// `GET` a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.get_json(path).await?.decode()
    }

    /// `GET` a JSON document, read but not decoded yet: for a type that
    /// borrows its strings from the answer ([`JsonBody::decode`]).
    pub async fn get_json(&self, path: &str) -> Result<JsonBody, ClientError> {
        self.within(async {
            let response = self.send_unbounded(Method::GET, path, None).await?;
            let status = response.status().as_u16();
            let bytes = self.read_body(response).await?;
            Ok(JsonBody { status, bytes })
        })
        .await
    }

    /// `POST` a JSON body and decode the JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).expect("protocol types serialize");
        self.within(async {
            let response = self.send_unbounded(Method::POST, path, Some(body)).await?;
            self.decode(response).await
        })
        .await
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        response: Response<Incoming>,
    ) -> Result<T, ClientError> {
        let status = response.status().as_u16();
        let bytes = self.read_body(response).await?;
        decode_json(&bytes, PhantomData).map_err(|source| ClientError::Decode { status, source })
    }

    /// The whole body, in one buffer of the length the answer announced:
    /// each piece read is copied there and dropped at once, so the
    /// connection reads the next one into the same memory (collecting the
    /// pieces first kept every one of them, then copied them all again: a
    /// page fault per 4 KiB read, twice, for a thousand apps' statuses).
    async fn read_body(&self, response: Response<Incoming>) -> Result<Bytes, ClientError> {
        let mut body = response.into_body();
        let announced = body.size_hint().upper().unwrap_or(0);
        // A length is a hint, not a promise to trust with memory.
        let mut bytes =
            Vec::with_capacity(usize::try_from(announced).map_or(0, |n| n.min(MAX_PRESIZE)));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| self.http_error(source))?;
            if let Some(data) = frame.data_ref() {
                bytes.extend_from_slice(data);
            }
        }
        Ok(bytes.into())
    }

    fn http_error(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            socket: self.socket.clone(),
            source,
        }
    }
}

/// The body of a successful answer, as the daemon sent it.
#[derive(Debug, Clone)]
pub struct JsonBody {
    status: u16,
    bytes: Bytes,
}

impl JsonBody {
    /// A body of a successful answer (`status`) as it arrived.
    pub fn new(status: u16, bytes: impl Into<Bytes>) -> JsonBody {
        JsonBody {
            status,
            bytes: bytes.into(),
        }
    }

    /// The body as a `T`, which may borrow strings from it.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ClientError> {
        self.decode_seed(PhantomData::<T>)
    }

    /// The body as `seed` decodes it (which may borrow strings from it).
    pub fn decode_seed<'a, S: DeserializeSeed<'a>>(
        &'a self,
        seed: S,
    ) -> Result<S::Value, ClientError> {
        decode_json(&self.bytes, seed).map_err(|source| ClientError::Decode {
            status: self.status,
            source,
        })
    }

    /// Bytes of the body.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// `body` as `seed` decodes it: as `serde_json::from_slice` decodes it,
/// but checking that it is UTF-8 once rather than string by string (a
/// fifth of the decoding of a thousand apps' statuses); what is not UTF-8
/// gets `from_slice`'s error.
fn decode_json<'a, S: DeserializeSeed<'a>>(
    body: &'a [u8],
    seed: S,
) -> Result<S::Value, serde_json::Error> {
    fn whole<'a, R: serde_json::de::Read<'a>, S: DeserializeSeed<'a>>(
        mut de: serde_json::Deserializer<R>,
        seed: S,
    ) -> Result<S::Value, serde_json::Error> {
        let value = seed.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
    match std::str::from_utf8(body) {
        Ok(text) => whole(serde_json::Deserializer::from_str(text), seed),
        Err(_) => whole(serde_json::Deserializer::from_slice(body), seed),
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let error = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => body.error,
        Err(_) => ApiError::new(
            ErrorCode::Internal,
            format!(
                "appvisord answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            ),
        ),
    };
    ClientError::Api {
        status: status.as_u16(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_says_the_daemon_may_not_run() {
        let client = Client::new("/nonexistent/ctl.sock");
        let err = client.get::<crate::WhoAmI>("/v1/whoami").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot reach appvisord at /nonexistent/ctl.sock: no such file (is the daemon running?)"
        );
    }

    #[tokio::test]
    async fn a_daemon_that_accepts_but_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("ctl.sock");
        // Bound and listening, never accepting: what a stopped daemon is.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let client = Client::new(&socket).with_timeout(Some(Duration::from_millis(200)));
        let began = std::time::Instant::now();
        let err = client.get::<crate::WhoAmI>("/v1/whoami").await.unwrap_err();
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "appvisord at {} did not answer within 200ms (is it stopped or overloaded?)",
                socket.display()
            )
        );
    }

    #[test]
    fn answers_decode_as_from_slice_decodes_them() {
        let cases: [&[u8]; 5] = [
            br#"{"uid":0,"user":"root","groups":[],"role":"admin","apps":["\u00e9"]}"#,
            b"{\"uid\":0,\"user\":\"r\xc3\xa9\",\"groups\":[],\"role\":\"admin\",\"apps\":[]}",
            // Not UTF-8, in a string and outside one.
            b"{\"uid\":0,\"user\":\"r\xff\",\"groups\":[],\"role\":\"admin\",\"apps\":[]}",
            b"{\"uid\":0,\xff}",
            br#"{"uid":0,"user":"root"}"#,
        ];
        for body in cases {
            let ours = decode_json(body, PhantomData::<crate::WhoAmI>).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<crate::WhoAmI>(body).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_non_json_error_keeps_the_status() {
        let err = api_error(StatusCode::BAD_GATEWAY, b"oops");
        assert_eq!(err.to_string(), "appvisord answered 502 Bad Gateway: oops");
    }
}
