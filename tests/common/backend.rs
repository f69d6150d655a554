//! A small OpenAI-compatible chat-completions server for tests and the demo.
//!
//! std + serde_json only. It answers `POST .../chat/completions` after a configurable delay
//! with `Answer to "<question>" (model <model>[, system <system>])`, counts calls, records
//! what it was sent, and can be told to misbehave (error statuses, garbage, silence).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server replies.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A well-formed completion.
    Answer,
    /// This HTTP status with this body.
    Status(u16, String),
    /// 200 with this body as is.
    Raw(String),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

pub struct Shared {
    calls: AtomicUsize,
    delay_ms: AtomicUsize,
    reply: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
}

#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// The answer the server gives; tests compare replies against it.
pub fn answer_for(question: &str, model: &str, system: &str) -> String {
    if system.is_empty() {
        format!("Answer to \"{question}\" (model {model})")
    } else {
        format!("Answer to \"{question}\" (model {model}, system {system})")
    }
}

impl Backend {
    /// Starts on a free loopback port; the server lives as long as the process.
    pub fn start(delay: Duration) -> Backend {
        Self::start_on("127.0.0.1:0", delay)
    }

    pub fn start_on(addr: &str, delay: Duration) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let shared = Arc::new(Shared {
            calls: AtomicUsize::new(0),
            delay_ms: AtomicUsize::new(delay.as_millis() as usize),
            reply: Mutex::new(Reply::Answer),
            requests: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(conn, &s);
                });
            }
        });
        Backend { addr, shared }
    }

    /// The base URL to put in `qa.backend-url`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, d: Duration) {
        self.shared
            .delay_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    pub fn set_reply(&self, r: Reply) {
        *self.shared.reply.lock().unwrap() = r;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, s: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let value = value.trim().to_string();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse().unwrap_or(0),
                "authorization" => authorization = Some(value),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.requests.lock().unwrap().push(Recorded {
        path: path.clone(),
        authorization,
        body: body.clone(),
    });
    std::thread::sleep(Duration::from_millis(
        s.delay_ms.load(Ordering::SeqCst) as u64
    ));
    let reply = s.reply.lock().unwrap().clone();
    let (status, text) = match reply {
        Reply::Answer if path.ends_with("/chat/completions") => (200, completion(&body)),
        Reply::Answer => (404, "{\"error\":\"not found\"}".to_string()),
        Reply::Status(code, text) => (code, text),
        Reply::Raw(text) => (200, text),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    )?;
    conn.write_all(text.as_bytes())?;
    conn.flush()
}

fn completion(req: &serde_json::Value) -> String {
    let model = req["model"].as_str().unwrap_or("");
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
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": question.len() / 4 + 1, "completion_tokens": answer.len() / 4 + 1,
                  "total_tokens": question.len() / 4 + answer.len() / 4 + 2}
    })
    .to_string()
}
