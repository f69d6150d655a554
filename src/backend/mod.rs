//! Backends: how a question becomes an HTTP request and a reply becomes an answer.
//!
//! Each wire format lives in its own file behind [`WireFormat`]; building requests and
//! parsing replies are pure functions with unit tests. [`http`] does the network part and
//! only ever runs on a worker thread.

pub mod anthropic;
pub mod breaker;
pub mod embed;
pub mod http;
pub mod judge;
pub mod openai;
pub mod rerank;
pub mod retry;
pub mod sse;
pub mod stream;
pub mod webhook;

use std::fmt;

/// What the backend is asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The question as the client asked it (not normalized): the model sees what was typed.
    pub question: String,
    pub model: String,
    /// Empty means no system message.
    pub system: String,
    /// The cache name (for the webhook format, which may route on it).
    pub cache: String,
    /// The question as normalized for the key (for the webhook format).
    pub normalized: String,
    /// Longest completion asked for (`qa.max-tokens`; the Anthropic format requires one).
    pub max_tokens: u32,
    /// The context the app retrieved (`CONTEXT`); empty: none.
    pub context: String,
    /// How the chat formats put the context and the question into the user message
    /// (`qa.context-template`, see [`Request::user_message`]).
    pub context_template: String,
}

/// The default of `qa.context-template`.
pub const DEFAULT_CONTEXT_TEMPLATE: &str =
    "Answer the question using only the context below.\n\nContext:\n{context}\n\nQuestion: {question}";

impl Request {
    /// The user message of the chat formats: the question, or with a context the template
    /// with `{context}` and `{question}` replaced (in one pass: a context that contains
    /// `{question}` is not expanded again).
    pub fn user_message(&self) -> std::borrow::Cow<'_, str> {
        if self.context.is_empty() {
            return self.question.as_str().into();
        }
        fill_template(&self.context_template, &self.context, &self.question).into()
    }
}

/// `template` with each `{context}` and `{question}` replaced.
pub fn fill_template(template: &str, context: &str, question: &str) -> String {
    let mut out = String::with_capacity(template.len() + context.len() + question.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{context}") {
            out.push_str(context);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{question}") {
            out.push_str(question);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// What the backend answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub text: String,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    /// The completion was cut short (OpenAI `finish_reason: "length"`, Anthropic
    /// `stop_reason: "max_tokens"`): replied, but stored only with `qa.cache-truncated yes`.
    pub truncated: bool,
    /// The backend asked not to store this answer (webhook `"cache": false`).
    pub no_store: bool,
    /// The entry's lifetime chosen by the backend (webhook `"ttl"`), instead of the asker's.
    pub ttl_secs: Option<i64>,
    /// The documents the answer cites (webhook `"sources"`), as an entry's sources part
    /// (see `crate::sources::encode`); empty: none.
    pub sources: Vec<u8>,
}

/// Which wire format misses use (`qa.backend-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    OpenAi,
    Anthropic,
    Webhook,
}

impl Format {
    pub fn wire(self) -> &'static dyn WireFormat {
        match self {
            Format::OpenAi => &openai::OpenAi,
            Format::Anthropic => &anthropic::Anthropic,
            Format::Webhook => &webhook::Webhook,
        }
    }
}

/// Why a backend call produced no answer. Every variant maps to one `ERR` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    NotConfigured,
    ApiKey(String),
    Unreachable(String),
    Timeout(u64),
    Status {
        code: u16,
        excerpt: String,
    },
    TooLarge(u64),
    Malformed(String),
    Empty,
    Busy,
    /// The circuit breaker is open: the backend failed too often, calls are not tried.
    BreakerOpen,
    CaFile(String),
    Internal,
}

/// The longest an entry may live, in seconds: the bound of `qa.ttl`, `TTL`, `STALE` and a
/// webhook reply's `ttl`. Ten years: long enough for any cache, short enough that
/// `now + ttl` never overflows. Defined here, below `config`, so the wire formats need not
/// read upward.
pub const MAX_TTL_SECS: i64 = 315_360_000;

/// Failure kinds, for the INFO counters and the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ours, not the backend's: no URL, unreadable key or CA file, queue full, breaker open.
    Local,
    Unreachable,
    Timeout,
    Http4xx,
    Http429,
    Http5xx,
    Malformed,
    Empty,
    TooLarge,
}

impl Kind {
    /// Every kind, in declaration order (which is their counters' order in
    /// `stats::ERRORS_BY_KIND`).
    pub const ALL: [Kind; 9] = [
        Kind::Local,
        Kind::Unreachable,
        Kind::Timeout,
        Kind::Http4xx,
        Kind::Http429,
        Kind::Http5xx,
        Kind::Malformed,
        Kind::Empty,
        Kind::TooLarge,
    ];

    /// The `INFO qa` field counting failures of this kind (Redis adds the `qa_` prefix).
    pub fn info_field(self) -> &'static str {
        match self {
            Kind::Local => "errors_local",
            Kind::Unreachable => "errors_unreachable",
            Kind::Timeout => "errors_timeout",
            Kind::Http4xx => "errors_http_4xx",
            Kind::Http429 => "errors_http_429",
            Kind::Http5xx => "errors_http_5xx",
            Kind::Malformed => "errors_malformed",
            Kind::Empty => "errors_empty",
            Kind::TooLarge => "errors_too_large",
        }
    }
}

impl crate::stats::CounterIndex for Kind {
    fn counter_index(&self) -> usize {
        *self as usize
    }
}

impl BackendError {
    pub fn kind(&self) -> Kind {
        match self {
            BackendError::Unreachable(_) => Kind::Unreachable,
            BackendError::Timeout(_) => Kind::Timeout,
            BackendError::Status { code: 429, .. } => Kind::Http429,
            BackendError::Status { code, .. } if *code >= 500 => Kind::Http5xx,
            BackendError::Status { .. } => Kind::Http4xx,
            BackendError::TooLarge(_) => Kind::TooLarge,
            BackendError::Malformed(_) => Kind::Malformed,
            BackendError::Empty => Kind::Empty,
            BackendError::NotConfigured
            | BackendError::ApiKey(_)
            | BackendError::Busy
            | BackendError::BreakerOpen
            | BackendError::CaFile(_)
            | BackendError::Internal => Kind::Local,
        }
    }

    /// Whether this failure says the backend is sick (counts towards opening the breaker).
    /// A backend that answers promptly, even with a 4xx or a reply we cannot use, is up: only
    /// silence, refusals, 5xx and rate limiting count.
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self.kind(),
            Kind::Unreachable | Kind::Timeout | Kind::Http429 | Kind::Http5xx
        )
    }
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
            BackendError::BreakerOpen => f.write_str(e::BREAKER_OPEN),
            BackendError::CaFile(why) => write!(f, "{}: {why}", e::CA_FILE),
            BackendError::Internal => f.write_str(e::INTERNAL),
        }
    }
}

/// One backend wire format: the path it posts to, the JSON it sends, how it reads a reply.
/// Both halves are pure: no I/O, no clock, no config.
pub trait WireFormat: Sync {
    /// Appended to `qa.backend-url` (empty: post to the URL itself).
    fn path(&self) -> &'static str;
    /// Headers besides `Content-Type`; `api_key` is empty when none is configured.
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)>;
    fn request_body(&self, req: &Request) -> Vec<u8>;
    /// Reads a 2xx reply. Never panics, whatever the bytes.
    fn parse_reply(&self, body: &[u8]) -> Result<Answer, BackendError>;
}

/// Parses a JSON body, or says why not.
pub(crate) fn json(body: &[u8]) -> Result<serde_json::Value, BackendError> {
    serde_json::from_slice(body).map_err(|e| BackendError::Malformed(format!("not JSON ({e})")))
}

/// A token count from `usage`-like objects: a non-negative integer, else none.
pub(crate) fn count(v: Option<&serde_json::Value>, field: &str) -> Option<u64> {
    v.and_then(|u| u.get(field))
        .and_then(serde_json::Value::as_u64)
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
    fn every_failure_kind_has_its_own_counter() {
        use crate::stats::{CounterIndex, ERRORS_BY_KIND};
        assert_eq!(Kind::ALL.len(), ERRORS_BY_KIND.len());
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.counter_index(), i, "{kind:?}");
        }
    }

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

    /// (template, context, question, user message)
    #[test]
    fn context_templates() {
        let rows = [
            ("{context}|{question}", "C", "Q", "C|Q"),
            ("Q: {question}", "C", "Q", "Q: Q"), // a template may leave the context out
            ("{question}{question}", "C", "Q", "QQ"),
            ("{ctx} {context", "C", "Q", "{ctx} {context"), // not placeholders
            ("{context}", "{question}", "Q", "{question}"), // no second expansion
            ("\u{e9}{context}\u{e9}", "C", "Q", "\u{e9}C\u{e9}"),
        ];
        for (t, c, q, want) in rows {
            assert_eq!(fill_template(t, c, q), want, "{t}");
        }
        let mut r = Request {
            question: "Q".into(),
            context_template: "{context}/{question}".into(),
            ..Request::default()
        };
        assert_eq!(r.user_message(), "Q");
        r.context = "C".into();
        assert_eq!(r.user_message(), "C/Q");
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
