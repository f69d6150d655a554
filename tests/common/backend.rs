//! A small LLM backend for tests and the demo, speaking three wire formats by path:
//! OpenAI chat completions (`.../chat/completions`), Anthropic messages (`.../messages`) and
//! the webhook format (`.../hook`).
//!
//! std + serde_json (+ rustls for HTTPS, libc to reset connections). It answers after a
//! configurable delay with `Answer to "<question>" (model <model>[, system <system>])`,
//! counts calls, records what it was sent (headers and body), and can be told to misbehave:
//! error statuses with headers, garbage, hanging, resetting the connection, oversized and
//! truncated replies. A queue of one-shot replies ([`Backend::push`]) goes before the
//! default reply ([`Backend::set_reply`]). Yes/no questions (chat requests with a tiny
//! `max_tokens`: the semantic verifier's and the audit's) have a queue and a default of their
//! own ([`Backend::push_judge`], [`Backend::set_judge`]; "yes" by default), and
//! `.../rerank` scores documents by the cosine of the stand-in embeddings.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the server replies.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A well-formed answer in the format of the request's path.
    Answer,
    /// A well-formed answer cut short by the token limit (`finish_reason: "length"`,
    /// `stop_reason: "max_tokens"`).
    Truncated,
    /// This HTTP status with this body.
    Status(u16, String),
    /// This HTTP status with these extra headers and this body.
    StatusWith(u16, Vec<(String, String)>, String),
    /// 200 with this body as is.
    Raw(String),
    /// Read the request, then answer nothing for a minute.
    Hang,
    /// Read the request, then reset the connection (RST, no response).
    Reset,
    /// 200 with a body of this many bytes, declared in `Content-Length`.
    Oversized(usize),
    /// 200 with a body of this many bytes and no `Content-Length` (ends at close).
    OversizedUndeclared(usize),
    /// A well-formed chat reply in the format of the request's path whose text is this
    /// (for the verifier's and the audit's yes/no questions).
    Says(String),
    /// To a streamed request (`"stream": true`): this many pieces of the answer, then the
    /// connection closes without the stream's end.
    StreamDrop(usize),
    /// To a streamed request: this many pieces of the answer, then an error event with this
    /// message.
    StreamError(usize, String),
    /// To a streamed request: this many pieces of the answer, then nothing for a minute.
    StreamStall(usize),
}

/// `max_tokens` at or under this marks a chat request as a yes/no question (the verifier's or
/// the audit's): it is answered from the judge's queue, see [`Backend::push_judge`].
pub const JUDGE_MAX_TOKENS: u64 = 16;

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// Every header, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
    pub raw_body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Shared {
    calls: AtomicUsize,
    /// Between two pieces of a streamed reply.
    pace_ms: AtomicUsize,
    /// Before the first piece of a streamed reply, instead of the delay (`usize::MAX`: the
    /// delay).
    first_ms: AtomicUsize,
    delay_ms: AtomicUsize,
    reply: Mutex<Reply>,
    queue: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Recorded>>,
    judge: Mutex<Reply>,
    judge_queue: Mutex<VecDeque<Reply>>,
}

#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tls: bool,
}

/// The answer the server gives; tests compare replies against it.
pub fn answer_for(question: &str, model: &str, system: &str) -> String {
    if system.is_empty() {
        format!("Answer to \"{question}\" (model {model})")
    } else {
        format!("Answer to \"{question}\" (model {model}, system {system})")
    }
}

/// Dimensions of the stand-in embeddings.
pub const EMBED_DIMS: usize = 64;

/// A deterministic stand-in for a sentence embedding (`.../embeddings`): a bag of words,
/// each word (lowercased, letters and digits only, "your" read as "our") adding a signed unit
/// to one of `EMBED_DIMS` dimensions chosen by its hash. Two questions sharing n of their m
/// words have a cosine of about n/m, so a test can pick how similar they are.
pub fn embedding_for(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; EMBED_DIMS];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = if word == "your" { "our" } else { word };
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let sign = if (h >> 32) & 1 == 0 { 1.0 } else { -1.0 };
        v[(h % EMBED_DIMS as u64) as usize] += sign;
    }
    if v.iter().all(|x| *x == 0.0) {
        v[0] = 1.0;
    }
    v
}

impl Backend {
    /// Starts on a free loopback port; the server lives as long as the process.
    pub fn start(delay: Duration) -> Backend {
        Self::start_on("127.0.0.1:0", delay)
    }

    pub fn start_on(addr: &str, delay: Duration) -> Backend {
        Self::start_full(addr, delay, None)
    }

    /// Starts an HTTPS server with this TLS configuration.
    pub fn start_tls(delay: Duration, tls: Arc<rustls::ServerConfig>) -> Backend {
        Self::start_full("127.0.0.1:0", delay, Some(tls))
    }

    fn start_full(addr: &str, delay: Duration, tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let shared = Arc::new(Shared {
            calls: AtomicUsize::new(0),
            pace_ms: AtomicUsize::new(0),
            first_ms: AtomicUsize::new(usize::MAX),
            delay_ms: AtomicUsize::new(delay.as_millis() as usize),
            reply: Mutex::new(Reply::Answer),
            queue: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            judge: Mutex::new(Reply::Says("yes".into())),
            judge_queue: Mutex::new(VecDeque::new()),
        });
        let s = Arc::clone(&shared);
        let is_tls = tls.is_some();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = match tls {
                        None => {
                            let raw = conn.try_clone();
                            match raw {
                                Ok(raw) => serve(conn, &raw, &s),
                                Err(e) => Err(e),
                            }
                        }
                        Some(cfg) => serve_tls(conn, cfg, &s),
                    };
                });
            }
        });
        Backend {
            addr,
            shared,
            tls: is_tls,
        }
    }

    /// The base URL for the OpenAI and Anthropic formats (`qa.backend-url`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/v1", self.addr)
    }

    /// The URL for the webhook format.
    pub fn hook_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/hook", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// The time between two pieces of a streamed reply (`"stream": true` requests are
    /// answered with server-sent events in the format of the path, one word a piece).
    pub fn set_pace(&self, d: Duration) {
        self.shared
            .pace_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// The wait before the first piece of a streamed reply (a model's time to first token),
    /// instead of the delay every other reply waits.
    pub fn set_stream_first(&self, d: Duration) {
        self.shared
            .first_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// The reply to every request once the queue of [`push`](Self::push)ed ones is empty.
    pub fn set_reply(&self, r: Reply) {
        *self.shared.reply.lock().unwrap() = r;
    }

    /// Replies to the next requests, one each, in order, before the default reply.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.queue.lock().unwrap().extend(replies);
    }

    /// The reply to every yes/no question (a chat request with a tiny `max_tokens`) once
    /// the judge's queue is empty; `Says("yes")` at start.
    pub fn set_judge(&self, r: Reply) {
        *self.shared.judge.lock().unwrap() = r;
    }

    /// Replies to the next yes/no questions, one each, in order. They never consume the
    /// queue of [`push`](Self::push).
    pub fn push_judge(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.judge_queue.lock().unwrap().extend(replies);
    }

    /// The yes/no questions received, in order.
    pub fn judge_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.body["max_tokens"]
                    .as_u64()
                    .is_some_and(|m| m <= JUDGE_MAX_TOKENS)
            })
            .collect()
    }

    /// The base URL for `qa.rerank-url` (the server answers `POST .../rerank`).
    pub fn rerank_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Forgets recorded requests and queued replies (the call count stays).
    pub fn clear(&self) {
        self.shared.requests.lock().unwrap().clear();
        self.shared.queue.lock().unwrap().clear();
    }
}

fn serve_tls(conn: TcpStream, cfg: Arc<rustls::ServerConfig>, s: &Shared) -> std::io::Result<()> {
    let raw = conn.try_clone()?;
    let tls = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let stream = rustls::StreamOwned::new(tls, conn);
    serve(stream, &raw, s)
}

fn serve<S: Read + Write>(conn: S, raw: &TcpStream, s: &Shared) -> std::io::Result<()> {
    raw.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    let mut authorization = None;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            match name.as_str() {
                "content-length" => len = value.parse().unwrap_or(0),
                "authorization" => authorization = Some(value.clone()),
                _ => {}
            }
            headers.push((name, value));
        }
    }
    let mut raw_body = vec![0u8; len];
    reader.read_exact(&mut raw_body)?;
    let body: serde_json::Value = serde_json::from_slice(&raw_body).unwrap_or_default();
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.requests.lock().unwrap().push(Recorded {
        method,
        path: path.clone(),
        authorization,
        headers,
        body: body.clone(),
        raw_body,
        at: Instant::now(),
    });
    let judged = body["max_tokens"]
        .as_u64()
        .is_some_and(|m| m <= JUDGE_MAX_TOKENS);
    let reply = if judged {
        s.judge_queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| s.judge.lock().unwrap().clone())
    } else {
        s.queue
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| s.reply.lock().unwrap().clone())
    };
    let streamed = body["stream"] == serde_json::Value::Bool(true);
    let first = s.first_ms.load(Ordering::SeqCst);
    let wait = if streamed && first != usize::MAX {
        first
    } else {
        s.delay_ms.load(Ordering::SeqCst)
    };
    std::thread::sleep(Duration::from_millis(wait as u64));
    let conn = reader.get_mut();
    let pace = Duration::from_millis(s.pace_ms.load(Ordering::SeqCst) as u64);
    if streamed {
        let plain = match &reply {
            Reply::Answer
            | Reply::StreamDrop(_)
            | Reply::StreamError(..)
            | Reply::StreamStall(_) => answer(&path, &body, false),
            Reply::Truncated => answer(&path, &body, true),
            Reply::Says(text) => Some(says(&path, &body, text)),
            _ => None,
        };
        if let Some(plain) = plain {
            let cut = match &reply {
                Reply::StreamDrop(n) => Cut::Drop(*n),
                Reply::StreamError(n, m) => Cut::Error(*n, m.clone()),
                Reply::StreamStall(n) => Cut::Stall(*n),
                _ => Cut::None,
            };
            return stream_reply(conn, &path, &plain, pace, cut);
        }
    }
    let (status, extra, text) = match reply {
        Reply::Answer => match answer(&path, &body, false) {
            Some(text) => (200, Vec::new(), text),
            None => (404, Vec::new(), "{\"error\":\"not found\"}".to_string()),
        },
        Reply::Truncated => match answer(&path, &body, true) {
            Some(text) => (200, Vec::new(), text),
            None => (404, Vec::new(), "{\"error\":\"not found\"}".to_string()),
        },
        Reply::Status(code, text) => (code, Vec::new(), text),
        Reply::StatusWith(code, headers, text) => (code, headers, text),
        Reply::Raw(text) => (200, Vec::new(), text),
        Reply::Says(text) => (200, Vec::new(), says(&path, &body, &text)),
        Reply::StreamDrop(_) | Reply::StreamError(..) | Reply::StreamStall(_) => {
            match answer(&path, &body, false) {
                Some(text) => (200, Vec::new(), text),
                None => (404, Vec::new(), "{\"error\":\"not found\"}".to_string()),
            }
        }
        Reply::Hang => {
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        Reply::Reset => {
            reset(raw);
            return Ok(());
        }
        Reply::Oversized(n) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            )?;
            return stream_bytes(conn, n);
        }
        Reply::OversizedUndeclared(n) => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            )?;
            return stream_bytes(conn, n);
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(text.as_bytes())?;
    conn.flush()
}

/// How a streamed reply ends.
enum Cut {
    None,
    Drop(usize),
    Error(usize, String),
    Stall(usize),
}

/// The pieces of an answer as a streaming model would send them: word by word, spaces kept.
pub fn pieces_of(answer: &str) -> Vec<String> {
    answer.split_inclusive(' ').map(str::to_string).collect()
}

/// Writes `plain` (a whole reply in the format of `path`) as the server-sent events of a
/// streamed reply in that format, `pace` between pieces; no `Content-Length`, the stream
/// ends when the connection closes.
fn stream_reply<W: Write>(
    conn: &mut W,
    path: &str,
    plain: &str,
    pace: Duration,
    cut: Cut,
) -> std::io::Result<()> {
    use serde_json::json;
    let v: serde_json::Value = serde_json::from_str(plain).unwrap_or_default();
    let anthropic = path.ends_with("/messages");
    let hook = path.ends_with("/hook");
    let text: String = if anthropic {
        v["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["text"].as_str())
            .collect()
    } else if hook {
        v["answer"].as_str().unwrap_or("").to_string()
    } else {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )?;
    let event = |conn: &mut W, name: &str, data: serde_json::Value| -> std::io::Result<()> {
        if name.is_empty() {
            write!(conn, "data: {data}\n\n")?;
        } else {
            write!(conn, "event: {name}\ndata: {data}\n\n")?;
        }
        conn.flush()
    };
    if anthropic {
        event(
            conn,
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_test", "type": "message",
                   "role": "assistant", "content": [], "model": v["model"], "stop_reason": null,
                   "usage": {"input_tokens": v["usage"]["input_tokens"], "output_tokens": 1}}}),
        )?;
        event(
            conn,
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        )?;
    } else if !hook {
        event(
            conn,
            "",
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": null}]}),
        )?;
    }
    for (i, piece) in pieces_of(&text).iter().enumerate() {
        match &cut {
            Cut::Drop(n) if i == *n => return Ok(()),
            Cut::Stall(n) if i == *n => {
                std::thread::sleep(Duration::from_secs(60));
                return Ok(());
            }
            Cut::Error(n, message) if i == *n => {
                let data = if anthropic {
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": message}})
                } else if hook {
                    json!({ "error": message })
                } else {
                    json!({"error": {"message": message, "type": "server_error"}})
                };
                return event(conn, if anthropic { "error" } else { "" }, data);
            }
            _ => {}
        }
        if i > 0 {
            std::thread::sleep(pace);
        }
        let data = if anthropic {
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}})
        } else if hook {
            json!({ "text": piece })
        } else {
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
        };
        event(
            conn,
            if anthropic { "content_block_delta" } else { "" },
            data,
        )?;
    }
    if anthropic {
        event(
            conn,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        )?;
        event(
            conn,
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": v["stop_reason"],
                   "stop_sequence": null}, "usage": {"output_tokens": v["usage"]["output_tokens"]}}),
        )?;
        event(conn, "message_stop", json!({"type": "message_stop"}))
    } else if hook {
        event(conn, "", json!({"end": true}))
    } else {
        event(
            conn,
            "",
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": v["choices"][0]["finish_reason"]}]}),
        )?;
        event(
            conn,
            "",
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "choices": [],
                   "usage": v["usage"]}),
        )?;
        write!(conn, "data: [DONE]\n\n")?;
        conn.flush()
    }
}

/// Writes `n` bytes of a JSON-looking string; stops quietly when the client hangs up.
fn stream_bytes<W: Write>(conn: &mut W, n: usize) -> std::io::Result<()> {
    let chunk = vec![b'a'; 16 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        conn.write_all(&chunk[..k])?;
        left -= k;
    }
    conn.flush()
}

/// Makes closing the connection a TCP reset (SO_LINGER 0).
fn reset(conn: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // Closing the last descriptor (the caller's) now sends RST instead of FIN.
}

/// A chat reply saying `text` in the format of `path` (Anthropic for `.../messages`, else
/// OpenAI), with token usage.
fn says(path: &str, req: &serde_json::Value, text: &str) -> String {
    let model = req["model"].as_str().unwrap_or("");
    let tokens_in = req.to_string().len() / 4 + 1;
    if path.ends_with("/messages") {
        return serde_json::json!({
            "id": "msg_test", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": tokens_in, "output_tokens": 1}
        })
        .to_string();
    }
    serde_json::json!({
        "id": "chatcmpl-test", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": 1,
                  "total_tokens": tokens_in + 1}
    })
    .to_string()
}

/// Cosine of two stand-in embeddings.
pub fn cosine(a: &str, b: &str) -> f32 {
    let (x, y) = (embedding_for(a), embedding_for(b));
    let dot: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
    dot / (norm(&x) * norm(&y))
}

/// The reply body for the format of `path`, or `None` for an unknown path.
fn answer(path: &str, req: &serde_json::Value, truncated: bool) -> Option<String> {
    let model = req["model"].as_str().unwrap_or("");
    if path.ends_with("/chat/completions") {
        let mut system = "";
        let mut question = "";
        for m in req["messages"].as_array().into_iter().flatten() {
            match m["role"].as_str() {
                Some("system") => system = m["content"].as_str().unwrap_or(""),
                Some("user") => question = m["content"].as_str().unwrap_or(""),
                _ => {}
            }
        }
        let answer = answer_for(question, model, system);
        let finish = if truncated { "length" } else { "stop" };
        return Some(
            serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": question.len() / 4 + 1,
                          "completion_tokens": answer.len() / 4 + 1,
                          "total_tokens": question.len() / 4 + answer.len() / 4 + 2}
            })
            .to_string(),
        );
    }
    if path.ends_with("/messages") {
        let system = req["system"].as_str().unwrap_or("");
        let question = req["messages"][0]["content"].as_str().unwrap_or("");
        let answer = answer_for(question, model, system);
        // Two text blocks, to show they are joined.
        let (a, b) = answer.split_at(answer.len() / 2);
        let stop = if truncated { "max_tokens" } else { "end_turn" };
        return Some(
            serde_json::json!({
                "id": "msg_test", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": a}, {"type": "text", "text": b}],
                "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": question.len() / 4 + 1,
                          "output_tokens": answer.len() / 4 + 1}
            })
            .to_string(),
        );
    }
    if path.ends_with("/embeddings") {
        let input = req["input"].as_str().unwrap_or("");
        return Some(
            serde_json::json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": embedding_for(input)}],
                "model": model,
                "usage": {"prompt_tokens": input.len() / 4 + 1, "total_tokens": input.len() / 4 + 1}
            })
            .to_string(),
        );
    }
    if path.ends_with("/rerank") {
        // The rerank API: each document scored by the cosine of the stand-in embeddings,
        // best first.
        let query = req["query"].as_str().unwrap_or("");
        let mut results: Vec<(usize, f32)> = req["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, d)| (i, cosine(query, d.as_str().unwrap_or(""))))
            .collect();
        results.sort_by(|a, b| b.1.total_cmp(&a.1));
        let results: Vec<serde_json::Value> = results
            .iter()
            .map(|(i, s)| serde_json::json!({"index": i, "relevance_score": s}))
            .collect();
        return Some(serde_json::json!({ "id": "rerank-test", "results": results }).to_string());
    }
    if path.ends_with("/hook") {
        let answer = answer_for(
            req["question"].as_str().unwrap_or(""),
            model,
            req["system"].as_str().unwrap_or(""),
        );
        return Some(serde_json::json!({ "answer": answer }).to_string());
    }
    None
}
