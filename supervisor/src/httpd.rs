//! What the control server (`control`) and the status server (`status`) both
//! answer without hyper's help: the JSON error body and the raw 503 sent
//! to a client over the connection cap. Routes and identity stay with
//! each server.

use appvisor_protocol::{ApiError, ErrorBody, ErrorCode};

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
