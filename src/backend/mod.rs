//! Backends: how a question becomes an HTTP request and a reply becomes an answer.
//!
//! Each wire format lives in its own file behind [`WireFormat`]; building requests and
//! parsing replies are pure functions with unit tests. [`http`] does the network part and
//! only ever runs on a worker thread.

pub mod http;
pub mod openai;

use std::fmt;

/// What the backend is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The question as the client asked it (not normalized): the model sees what was typed.
    pub question: String,
    pub model: String,
    /// Empty means no system message.
    pub system: String,
}

/// What the backend answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub text: String,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
}

/// Why a backend call produced no answer. Every variant maps to one `ERR` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    NotConfigured,
    ApiKey(String),
    Unreachable(String),
    Timeout(u64),
    Status { code: u16, excerpt: String },
    TooLarge(u64),
    Malformed(String),
    Empty,
    Busy,
    Internal,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::error as e;
        match self {
            BackendError::NotConfigured => f.write_str(e::BACKEND_URL_NOT_SET),
            BackendError::ApiKey(why) => write!(f, "{}: {why}", e::API_KEY_FILE),
            BackendError::Unreachable(why) => write!(f, "{}: {why}", e::BACKEND_UNREACHABLE),
            BackendError::Timeout(ms) => write!(f, "{} after {ms} ms", e::BACKEND_TIMEOUT),
            BackendError::Status { code, excerpt } => {
                write!(f, "{} {code}", e::BACKEND_STATUS)?;
                if !excerpt.is_empty() {
                    write!(f, ": {excerpt}")?;
                }
                Ok(())
            }
            BackendError::TooLarge(limit) => write!(f, "{} {limit} bytes", e::BACKEND_TOO_LARGE),
            BackendError::Malformed(why) => write!(f, "{}: {why}", e::BACKEND_MALFORMED),
            BackendError::Empty => f.write_str(e::BACKEND_EMPTY),
            BackendError::Busy => f.write_str(e::BUSY),
            BackendError::Internal => f.write_str(e::INTERNAL),
        }
    }
}

/// One backend wire format: the path it posts to, the JSON it sends, how it reads a reply.
pub trait WireFormat {
    /// Appended to `qa.backend-url`.
    fn path(&self) -> &'static str;
    /// Headers besides `Content-Type`; `api_key` is empty when none is configured.
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)>;
    fn request_body(&self, req: &Request) -> Vec<u8>;
    fn parse_reply(&self, body: &[u8]) -> Result<Answer, BackendError>;
}

/// A short, single-line, secret-free excerpt of an error body for an error reply.
pub fn excerpt(body: &[u8], secret: &str) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(body);
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if !secret.is_empty() {
        text = text.replace(secret, "[redacted]");
    }
    let trimmed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if trimmed.len() <= MAX {
        return trimmed;
    }
    let mut end = MAX;
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &trimmed[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_one_line_short_and_redacted() {
        // (body, secret, expected)
        let rows: &[(&[u8], &str, &str)] = &[
            (b"", "", ""),
            (b"{\"error\":\"bad\"}", "", "{\"error\":\"bad\"}"),
            (b"line1\r\nline2\n\n", "", "line1 line2"),
            (
                b"Incorrect API key sk-123 given",
                "sk-123",
                "Incorrect API key [redacted] given",
            ),
            (b"\xff\xfe bytes", "", "\u{FFFD}\u{FFFD} bytes"),
        ];
        for (body, secret, want) in rows {
            assert_eq!(excerpt(body, secret), *want);
        }
        let long = "é".repeat(300);
        let e = excerpt(long.as_bytes(), "");
        assert!(e.ends_with("...") && e.len() <= 203, "{}", e.len());
    }

    #[test]
    fn error_messages() {
        // (error, exact reply text without the ERR code)
        let rows = [
            (BackendError::Timeout(1500), "backend timeout after 1500 ms"),
            (
                BackendError::Status {
                    code: 500,
                    excerpt: "boom".into(),
                },
                "backend returned HTTP 500: boom",
            ),
            (
                BackendError::Status {
                    code: 404,
                    excerpt: String::new(),
                },
                "backend returned HTTP 404",
            ),
            (BackendError::Empty, "backend reply has no answer"),
            (
                BackendError::TooLarge(10),
                "backend reply larger than 10 bytes",
            ),
        ];
        for (err, want) in rows {
            assert_eq!(err.to_string(), want);
        }
    }
}
