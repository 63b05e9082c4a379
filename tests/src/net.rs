//! Free ports and a minimal HTTP/1.0 GET over `std::net::TcpStream`, so a
//! test checks what a client sees without an HTTP client dependency.
//!
//! Talks only to 127.0.0.1.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// A port that was free a moment ago, for an app to bind later: one this
/// process has not handed out before, below the kernel's ephemeral range.
///
/// Not `bind(127.0.0.1:0)`: that hands out ephemeral ports, which the
/// kernel may give again to the next `bind(0)` (two apps of one test told
/// the same port, the second failing to bind until the test times out) or
/// to any process's outgoing connection in the moment before the app binds.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = unephemeral_range();
    let span = u32::from(high - low);
    // Start at a random place (RandomState's keys are random per process),
    // so test binaries run at the same time seldom probe the same ports.
    let start = RandomState::new().hash_one(()) as u32 % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|&port| {
            !given.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        })
        .inspect(|&port| {
            given.insert(port);
        })
        .unwrap_or_else(|| panic!("no free port on 127.0.0.1 in {low}..{high}"))
}

/// `[low, high)`: up to 10,000 ports just below the ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 by default), above 1024.
fn unephemeral_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.max(2048);
    (high.saturating_sub(10_000).max(1024), high)
}

/// What came back from [`http_get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port`, 5 s timeouts, reading to EOF.
pub fn http_get(port: u16, path: &str) -> io::Result<HttpResponse> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let text = String::from_utf8_lossy(raw);
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("not HTTP: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok(HttpResponse {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap(),
            HttpResponse {
                status: 200,
                body: "hello".into()
            }
        );
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn gets_from_a_local_server() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert_ne!(n, 0, "client closed early");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&request).starts_with("GET /health HTTP/1.0\r\n"));
            conn.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        });
        let resp = http_get(port, "/health").unwrap();
        server.join().unwrap();
        assert_eq!(resp.status, 204);
        assert_ne!(free_port(), 0);
    }

    #[test]
    fn free_ports_are_never_handed_out_twice_and_are_not_ephemeral() {
        let (low, high) = unephemeral_range();
        let ports: BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 200, "a port handed out twice");
        assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
    }
}
