//! The network half of a backend call. Runs on worker threads only, never under the Redis
//! lock.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::retry::{self, Policy};
use super::{excerpt, sse, stream, Answer, BackendError, Format, Request};
use crate::stats;

/// What a worker needs to make one call; copied out of the config when the job is made.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub url: String,
    pub format: Format,
    pub api_key_file: String,
    /// PEM file of extra trusted roots for `https://` backends; empty: the system's only.
    pub ca_file: String,
    pub connect_timeout: Duration,
    pub max_answer_bytes: u64,
    pub retries: u32,
}

/// Where Linux distributions keep the system's trusted roots (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

/// The system's roots, read once. Empty when there is no bundle: then the roots compiled
/// into the module (Mozilla's, from webpki-roots) are used.
fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let env = std::env::var("SSL_CERT_FILE").ok();
        env.iter()
            .map(String::as_str)
            .chain(SYSTEM_BUNDLES.iter().copied())
            .filter_map(|path| std::fs::read(path).ok())
            .map(|pem| pem_certs(&pem))
            .find(|certs| !certs.is_empty())
            .unwrap_or_default()
    })
}

fn build_agent(extra_roots: Vec<Certificate<'static>>) -> ureq::Agent {
    let system = system_roots();
    let roots = if system.is_empty() && extra_roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(
            system.iter().cloned().chain(extra_roots).collect(),
        ))
    };
    ureq::Agent::config_builder()
        // Error statuses are read so their body can be quoted in the error reply.
        .http_status_as_error(false)
        .user_agent(concat!("redis-qa/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

/// One agent per CA file (and its modification time), so a changed `qa.backend-ca-file` or
/// a rewritten file takes effect on the next call; connections are pooled within an agent.
fn agent(ca_file: &str) -> Result<ureq::Agent, BackendError> {
    type Cached = (String, Option<SystemTime>, ureq::Agent);
    static AGENT: Mutex<Option<Cached>> = Mutex::new(None);
    let stamp = if ca_file.is_empty() {
        None
    } else {
        let meta =
            std::fs::metadata(ca_file).map_err(|e| BackendError::CaFile(e.kind().to_string()))?;
        meta.modified().ok()
    };
    let mut cached = AGENT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((file, at, agent)) = cached.as_ref() {
        if file == ca_file && *at == stamp {
            return Ok(agent.clone());
        }
    }
    let extra = if ca_file.is_empty() {
        Vec::new()
    } else {
        let pem = std::fs::read(ca_file).map_err(|e| BackendError::CaFile(e.kind().to_string()))?;
        let certs = pem_certs(&pem);
        if certs.is_empty() {
            return Err(BackendError::CaFile("no PEM certificate in it".into()));
        }
        certs
    };
    let agent = build_agent(extra);
    *cached = Some((ca_file.to_string(), stamp, agent.clone()));
    Ok(agent)
}

/// The API key: the file named by `qa.api-key-file` if set, else `QA_API_KEY`. Read per
/// call (on a worker), so a rotated key file takes effect without a restart.
fn api_key(settings: &CallSettings) -> Result<String, BackendError> {
    if settings.api_key_file.is_empty() {
        return Ok(std::env::var("QA_API_KEY")
            .unwrap_or_default()
            .trim()
            .to_string());
    }
    std::fs::read_to_string(&settings.api_key_file)
        .map(|s| s.trim().to_string())
        .map_err(|e| BackendError::ApiKey(e.kind().to_string()))
}

/// A failed attempt, and whether another one may help.
struct Failed {
    error: BackendError,
    transient: bool,
    retry_after: Option<Duration>,
}

impl From<BackendError> for Failed {
    fn from(error: BackendError) -> Self {
        Failed {
            error,
            transient: false,
            retry_after: None,
        }
    }
}

/// A random number in `[0, 1)` for the backoff jitter (no RNG crate needed: the std hasher's
/// keys are random per `RandomState`).
fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One kind of HTTP exchange: where it posts, with which headers and body, and how the reply
/// is read. The chat formats and the embeddings call are the two kinds.
pub trait Exchange {
    type Output;
    /// Appended to the URL (empty: post to the URL itself).
    fn path(&self) -> &str;
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)>;
    fn body(&self) -> Vec<u8>;
    /// Reads a 2xx reply. Never panics, whatever the bytes.
    fn parse(&self, body: &[u8]) -> Result<Self::Output, BackendError>;
}

/// A chat call in the configured wire format.
struct Chat<'a> {
    format: &'static dyn super::WireFormat,
    req: &'a Request,
}

impl Exchange for Chat<'_> {
    type Output = Answer;
    fn path(&self) -> &str {
        self.format.path()
    }
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        self.format.headers(api_key)
    }
    fn body(&self) -> Vec<u8> {
        self.format.request_body(self.req)
    }
    fn parse(&self, body: &[u8]) -> Result<Answer, BackendError> {
        self.format.parse_reply(body)
    }
}

/// An embeddings call (OpenAI-compatible, whatever `qa.backend-format` is).
pub struct Embed<'a> {
    pub model: &'a str,
    pub input: &'a str,
}

impl Exchange for Embed<'_> {
    type Output = super::embed::Embedding;
    fn path(&self) -> &str {
        super::embed::PATH
    }
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        super::embed::headers(api_key)
    }
    fn body(&self) -> Vec<u8> {
        super::embed::request_body(self.model, self.input)
    }
    fn parse(&self, body: &[u8]) -> Result<Self::Output, BackendError> {
        super::embed::parse_reply(body)
    }
}

/// Calls the backend, retrying transient failures while there is time before `deadline`.
/// `Ok` and `Err` both say how many attempts were made (0: the call was never tried).
pub fn call(
    settings: &CallSettings,
    req: &Request,
    deadline: Instant,
) -> (Result<Answer, BackendError>, u32) {
    let chat = Chat {
        format: settings.format.wire(),
        req,
    };
    exchange(settings, &chat, deadline)
}

/// Makes exchange `ex` with `settings.url`, retrying transient failures while there is time
/// before `deadline`; also says how many attempts were made.
pub fn exchange<E: Exchange>(
    settings: &CallSettings,
    ex: &E,
    deadline: Instant,
) -> (Result<E::Output, BackendError>, u32) {
    retrying(settings, deadline, |agent, key, budget| {
        attempt(agent, settings, key, ex, budget)
    })
}

/// A chat call asking for a streamed reply (see `stream`): `on_piece` gets each piece of the
/// answer as it arrives, on this thread. A reply that is not an event stream is read whole
/// and given as one piece. An attempt that failed after giving a piece is not retried (what
/// was given cannot be taken back). The answer is the one [`call`] would give.
pub fn call_streaming(
    settings: &CallSettings,
    req: &Request,
    deadline: Instant,
    on_piece: &mut dyn FnMut(&str),
) -> (Result<Answer, BackendError>, u32) {
    retrying(settings, deadline, |agent, key, budget| {
        let mut gave = false;
        let mut give = |p: &str| {
            gave = true;
            on_piece(p);
        };
        stream_attempt(agent, settings, key, req, budget, &mut give).map_err(|mut f| {
            f.transient &= !gave;
            f
        })
    })
}

/// Runs `once` (one attempt) again after transient failures while there is time before
/// `deadline`; says how many attempts were made.
fn retrying<T>(
    settings: &CallSettings,
    deadline: Instant,
    mut once: impl FnMut(&ureq::Agent, &str, Duration) -> Result<T, Failed>,
) -> (Result<T, BackendError>, u32) {
    if settings.url.is_empty() {
        return (Err(BackendError::NotConfigured), 0);
    }
    let prepared = api_key(settings).and_then(|key| Ok((key, agent(&settings.ca_file)?)));
    let (key, agent) = match prepared {
        Ok(p) => p,
        Err(e) => return (Err(e), 0),
    };
    let policy = Policy::new(settings.retries);
    let mut attempts = 0;
    loop {
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return (Err(BackendError::Timeout(0)), attempts);
        }
        attempts += 1;
        let failed = match once(&agent, &key, budget) {
            Ok(out) => return (Ok(out), attempts),
            Err(f) => f,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let delay = failed
            .transient
            .then(|| policy.next_delay(attempts - 1, failed.retry_after, left, jitter()))
            .flatten();
        match delay {
            Some(d) => {
                stats::BACKEND_RETRIES.bump();
                std::thread::sleep(d);
            }
            None => return (Err(failed.error), attempts),
        }
    }
}

/// What a ureq failure becomes.
fn failed(e: ureq::Error, timeout_ms: u64, key: &str) -> Failed {
    use std::io::ErrorKind as K;
    let error = match e {
        ureq::Error::Timeout(_) => BackendError::Timeout(timeout_ms),
        ureq::Error::BodyExceedsLimit(n) => BackendError::TooLarge(n),
        ureq::Error::Io(io) if io.kind() == K::TimedOut => BackendError::Timeout(timeout_ms),
        ureq::Error::Io(io) => {
            // The connection was made and then lost: the one network failure a second
            // attempt often fixes (a stale pooled connection, a restarting proxy).
            let transient = matches!(
                io.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof
            );
            // TLS failures come as InvalidData wrapping rustls's error, which says what
            // was wrong with the certificate: worth more than "invalid data".
            let reason = match (io.kind(), io.get_ref()) {
                (K::InvalidData, Some(inner)) => redact(&inner.to_string(), key),
                (K::UnexpectedEof, _) => "connection closed before the reply".to_string(),
                (kind, _) => kind.to_string(),
            };
            return Failed {
                error: BackendError::Unreachable(reason),
                transient,
                retry_after: None,
            };
        }
        ureq::Error::ConnectionFailed => BackendError::Unreachable("connection failed".into()),
        ureq::Error::HostNotFound => BackendError::Unreachable("host not found".into()),
        ureq::Error::BadUri(_) => BackendError::Unreachable("bad URL".into()),
        // Other ureq errors (TLS, protocol) name protocol details, never the request's
        // headers; redacted anyway.
        other => BackendError::Unreachable(redact(&other.to_string(), key)),
    };
    error.into()
}

/// Posts `body` to `settings.url` + `path`, bounded by `budget` (connect included).
fn send(
    agent: &ureq::Agent,
    settings: &CallSettings,
    key: &str,
    (path, headers, body): (&str, Vec<(&'static str, String)>, Vec<u8>),
    budget: Duration,
) -> Result<ureq::http::Response<ureq::Body>, Failed> {
    let timeout_ms = budget.as_millis() as u64;
    let url = format!("{}{}", settings.url.trim_end_matches('/'), path);
    let mut builder = agent
        .post(&url)
        .config()
        .timeout_global(Some(budget))
        .timeout_connect(Some(settings.connect_timeout.min(budget)))
        .build()
        .header("Content-Type", "application/json");
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.send(body).map_err(|e| failed(e, timeout_ms, key))
}

/// Reads a whole reply (up to `qa.max-answer-bytes`); a non-2xx status is a failure quoting
/// the body.
fn read_whole(
    resp: &mut ureq::http::Response<ureq::Body>,
    settings: &CallSettings,
    key: &str,
    timeout_ms: u64,
) -> Result<Vec<u8>, Failed> {
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
    let retry_after = retry::parse_retry_after(header("retry-after"), header("retry-after-ms"));
    // Refuse a declared oversize at once, without reading any of it.
    let declared = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > settings.max_answer_bytes) {
        return Err(BackendError::TooLarge(settings.max_answer_bytes).into());
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(settings.max_answer_bytes)
        .read_to_vec()
        .map_err(|e| failed(e, timeout_ms, key))?;
    if !(200..300).contains(&status) {
        return Err(Failed {
            error: BackendError::Status {
                code: status,
                excerpt: excerpt(&body, key),
            },
            transient: retry::retryable_status(status),
            retry_after,
        });
    }
    Ok(body)
}

/// One HTTP exchange, bounded by `budget` (connect included).
fn attempt<E: Exchange>(
    agent: &ureq::Agent,
    settings: &CallSettings,
    key: &str,
    ex: &E,
    budget: Duration,
) -> Result<E::Output, Failed> {
    let timeout_ms = budget.as_millis() as u64;
    let request = (ex.path(), ex.headers(key), ex.body());
    let mut resp = send(agent, settings, key, request, budget)?;
    let body = read_whole(&mut resp, settings, key, timeout_ms)?;
    ex.parse(&body).map_err(Failed::from)
}

/// One streamed chat exchange, bounded by `budget`: events are decoded as they arrive and
/// each piece of text handed to `on_piece`.
fn stream_attempt(
    agent: &ureq::Agent,
    settings: &CallSettings,
    key: &str,
    req: &Request,
    budget: Duration,
    on_piece: &mut dyn FnMut(&str),
) -> Result<Answer, Failed> {
    use std::io::Read;
    let timeout_ms = budget.as_millis() as u64;
    let wire = settings.format.wire();
    let mut headers = wire.headers(key);
    headers.push(("Accept", "text/event-stream, application/json".to_string()));
    let body = stream::request_body(settings.format, req);
    let mut resp = send(agent, settings, key, (wire.path(), headers, body), budget)?;
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) || !stream::is_event_stream(content_type) {
        // An error, or a server that answers streamed requests whole: one piece.
        let body = read_whole(&mut resp, settings, key, timeout_ms)?;
        let answer = wire.parse_reply(&body)?;
        on_piece(&answer.text);
        return Ok(answer);
    }
    let max = usize::try_from(settings.max_answer_bytes).unwrap_or(usize::MAX);
    // An event may hold a whole answer, escaped (JSON at most doubles most text), plus its
    // fields.
    let mut decoder = sse::Decoder::new(max.saturating_mul(2).saturating_add(64 << 10));
    let mut reader = stream::Reader::new(settings.format, max);
    // Only the decoder and the reader bound what is kept: the stream's length in bytes is
    // bounded by the time it may take.
    let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 16 << 10];
    let mut events = Vec::new();
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return Err(failed(ureq::Error::from(e), timeout_ms, key)),
        };
        decoder.feed(&buf[..n], &mut events)?;
        for ev in events.drain(..) {
            let piece = reader.event(&ev)?;
            if !piece.is_empty() {
                on_piece(piece);
            }
        }
        if reader.is_done() {
            break;
        }
    }
    if !reader.is_done() {
        decoder.finish(&mut events)?;
        for ev in events.drain(..) {
            let piece = reader.event(&ev)?;
            if !piece.is_empty() {
                on_piece(piece);
            }
        }
    }
    Ok(reader.finish()?)
}

/// `text` with every occurrence of the API key replaced; unchanged when there is no key (an
/// empty pattern would match between every character).
fn redact(text: &str, key: &str) -> String {
    if key.is_empty() {
        text.to_string()
    } else {
        text.replace(key, "[redacted]")
    }
}
