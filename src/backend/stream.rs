//! Streamed replies: the request body that asks for one, and a [`Reader`] that turns the
//! server-sent events of each wire format into pieces of text and, at the end, an [`Answer`]
//! exactly like the one the non-streaming parser gives. Pure: no I/O, no clock.
//!
//! - OpenAI-compatible: `"stream": true, "stream_options": {"include_usage": true}`; events
//!   `data: {"choices":[{"delta":{"content":"..."},"finish_reason":...}]}`, a last chunk
//!   with `"choices": []` and `usage`, then `data: [DONE]`.
//! - Anthropic: `"stream": true`; typed events `message_start` (input tokens),
//!   `content_block_delta` (`text_delta`), `message_delta` (stop reason, output tokens),
//!   `message_stop`, `ping`, `error`.
//! - Webhook: `"stream": true` in the body and `Accept: text/event-stream, application/json`.
//!   A service that can stream answers `Content-Type: text/event-stream` with events
//!   `data: {"text": "<piece>"}`, then `data: {"end": true}` (which may carry `ttl`, `cache`,
//!   `sources`,
//!   `tokens_in`, `tokens_out` as the plain reply does), or `data: {"error": "<message>"}`.
//!   A service that does not answers its usual JSON: the whole answer is then one piece.

use serde_json::{json, Value};

use super::sse::Event;
use super::{excerpt, Answer, BackendError, Format, Request};

/// The request body asking for a streamed reply in `format`.
pub fn request_body(format: Format, req: &Request) -> Vec<u8> {
    let body = format.wire().request_body(req);
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    map.insert("stream".into(), Value::Bool(true));
    if format == Format::OpenAi {
        map.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&Value::Object(map)).unwrap_or(body)
}

/// Whether a reply's `Content-Type` is an event stream (else it is read as a plain reply).
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
    })
}

/// The answer being read from an event stream.
pub struct Reader {
    format: Format,
    /// The answer so far (every piece, in order).
    text: String,
    max_bytes: usize,
    tokens_in: Option<u64>,
    tokens_out: Option<u64>,
    /// The finish (stop) reason, as the backend spelled it.
    finish: Option<String>,
    /// The stream said it was complete (`[DONE]`, `message_stop`, `{"end": true}`).
    done: bool,
    no_store: bool,
    ttl_secs: Option<i64>,
    /// The webhook end event's `"sources"` (as the plain reply's, `crate::sources::encode`).
    sources: Vec<u8>,
}

impl Reader {
    /// A reader refusing answers longer than `max_bytes`.
    pub fn new(format: Format, max_bytes: usize) -> Self {
        Reader {
            format,
            text: String::new(),
            max_bytes,
            tokens_in: None,
            tokens_out: None,
            finish: None,
            done: false,
            no_store: false,
            ttl_secs: None,
            sources: Vec::new(),
        }
    }

    /// The answer so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the stream said it was complete: anything after is ignored.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads one event; returns the piece of text it added (empty: none).
    pub fn event(&mut self, ev: &Event) -> Result<&str, BackendError> {
        if self.done {
            return Ok("");
        }
        let start = self.text.len();
        match self.format {
            Format::OpenAi => self.openai(ev)?,
            Format::Anthropic => self.anthropic(ev)?,
            Format::Webhook => self.webhook(ev)?,
        }
        if self.text.len() > self.max_bytes {
            return Err(BackendError::TooLarge(self.max_bytes as u64));
        }
        Ok(&self.text[start..])
    }

    fn push(&mut self, piece: &str) -> Result<(), BackendError> {
        // Checked before growing, so a hostile piece costs no more than the limit.
        if self.text.len() + piece.len() > self.max_bytes {
            return Err(BackendError::TooLarge(self.max_bytes as u64));
        }
        self.text.push_str(piece);
        Ok(())
    }

    fn openai(&mut self, ev: &Event) -> Result<(), BackendError> {
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v = data_json(ev)?;
        if let Some(e) = v.get("error") {
            return Err(stream_error(e));
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            self.tokens_in = super::count(Some(usage), "prompt_tokens").or(self.tokens_in);
            self.tokens_out = super::count(Some(usage), "completion_tokens").or(self.tokens_out);
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return Ok(()); // the usage chunk has no choice
        };
        match choice.get("delta").and_then(|d| d.get("content")) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => self.push(s)?,
            Some(_) => {
                return Err(BackendError::Malformed(
                    "choices[0].delta.content is not a string".into(),
                ))
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
        Ok(())
    }

    fn anthropic(&mut self, ev: &Event) -> Result<(), BackendError> {
        let v = data_json(ev)?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(&ev.name);
        match kind {
            "message_start" => {
                let usage = v.get("message").and_then(|m| m.get("usage"));
                self.tokens_in = super::count(usage, "input_tokens");
                self.tokens_out = super::count(usage, "output_tokens");
            }
            "content_block_delta" => {
                let delta = v.get("delta");
                // Other deltas (tool input, thinking) carry no answer text.
                if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta") {
                    match delta.and_then(|d| d.get("text")) {
                        Some(Value::String(s)) => self.push(s)?,
                        _ => {
                            return Err(BackendError::Malformed(
                                "text_delta without a text string".into(),
                            ))
                        }
                    }
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.finish = Some(r.to_string());
                }
                let usage = v.get("usage");
                self.tokens_out = super::count(usage, "output_tokens").or(self.tokens_out);
                self.tokens_in = super::count(usage, "input_tokens").or(self.tokens_in);
            }
            "message_stop" => self.done = true,
            "error" => return Err(stream_error(v.get("error").unwrap_or(&v))),
            // ping, content_block_start/stop, and event types added later.
            _ => {}
        }
        Ok(())
    }

    fn webhook(&mut self, ev: &Event) -> Result<(), BackendError> {
        let v = data_json(ev)?;
        if !v.is_object() {
            return Err(BackendError::Malformed("event is not a JSON object".into()));
        }
        if let Some(e) = v.get("error") {
            return Err(stream_error(e));
        }
        match v.get("text") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => self.push(s)?,
            Some(_) => return Err(BackendError::Malformed("text is not a string".into())),
        }
        if v.get("end") == Some(&Value::Bool(true)) {
            self.ttl_secs = super::webhook::ttl(v.get("ttl"))?;
            self.no_store = super::webhook::no_store(v.get("cache"))?;
            self.sources = super::webhook::sources(v.get("sources"))?;
            self.tokens_in = super::count(Some(&v), "tokens_in");
            self.tokens_out = super::count(Some(&v), "tokens_out");
            self.finish = Some("stop".into());
            self.done = true;
        }
        Ok(())
    }

    /// The stream ended (the body was read to its end): the answer, as the plain reply's
    /// parser would have given it. A stream that stops before saying it is complete is an
    /// error (a cut-off answer is never stored).
    pub fn finish(self) -> Result<Answer, BackendError> {
        // OpenAI-compatible servers that omit [DONE] still give a finish reason.
        let complete = self.done || (self.format == Format::OpenAi && self.finish.is_some());
        if !complete {
            return Err(BackendError::Unreachable(
                "connection closed before the end of the stream".into(),
            ));
        }
        if self.text.trim().is_empty() {
            return Err(BackendError::Empty);
        }
        let truncated = match self.format {
            Format::OpenAi => self.finish.as_deref() == Some("length"),
            Format::Anthropic => self.finish.as_deref() == Some("max_tokens"),
            Format::Webhook => false,
        };
        Ok(Answer {
            text: self.text,
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            truncated,
            no_store: self.no_store,
            ttl_secs: self.ttl_secs,
            sources: self.sources,
        })
    }
}

/// The finish reason a stream's end entry reports for `answer`.
pub fn finish_reason(answer: &Answer) -> &'static str {
    if answer.truncated {
        "length"
    } else {
        "stop"
    }
}

fn data_json(ev: &Event) -> Result<Value, BackendError> {
    serde_json::from_str(&ev.data)
        .map_err(|e| BackendError::Malformed(format!("event is not JSON ({e})")))
}

/// An error the backend reported inside the stream (after its 200 status).
fn stream_error(e: &Value) -> BackendError {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    BackendError::Malformed(format!("error event: {}", excerpt(message.as_bytes(), "")))
}

#[cfg(test)]
mod tests {
    use super::super::sse::Decoder;
    use super::*;

    /// Decodes `body` fed in pieces of `cut` bytes; the pieces of text and the end.
    fn read(format: Format, body: &str, cut: usize) -> (Vec<String>, Result<Answer, BackendError>) {
        let mut d = Decoder::new(1 << 16);
        let mut r = Reader::new(format, 1000);
        let mut pieces = Vec::new();
        let mut events = Vec::new();
        for chunk in body.as_bytes().chunks(cut) {
            if let Err(e) = d.feed(chunk, &mut events) {
                return (pieces, Err(e));
            }
            for ev in events.drain(..) {
                match r.event(&ev) {
                    Ok("") => {}
                    Ok(p) => pieces.push(p.to_string()),
                    Err(e) => return (pieces, Err(e)),
                }
            }
        }
        let _ = d.finish(&mut events);
        for ev in events.drain(..) {
            if let Err(e) = r.event(&ev) {
                return (pieces, Err(e));
            }
        }
        (pieces, r.finish())
    }

    /// An OpenAI stream recorded with `stream_options.include_usage` (ids shortened).
    const OPENAI: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Refunds\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" within 30 days.\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":6,\"total_tokens\":20}}\n\n\
data: [DONE]\n\n";

    /// An Anthropic stream as its documentation records it (shortened).
    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"RAG is \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"retrieval.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":9}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    const WEBHOOK: &str = "data: {\"text\": \"Our policy\"}\n\ndata: {\"text\": \": 30 days\"}\n\n\
data: {\"end\": true, \"ttl\": 60, \"tokens_in\": 3, \"tokens_out\": 4}\n\n";

    #[test]
    fn recorded_streams_give_the_plain_answer() {
        // (format, stream, pieces, answer)
        let rows = [
            (
                Format::OpenAi,
                OPENAI,
                vec!["Refunds", " within 30 days."],
                Answer {
                    text: "Refunds within 30 days.".into(),
                    tokens_in: Some(14),
                    tokens_out: Some(6),
                    ..Answer::default()
                },
            ),
            (
                Format::Anthropic,
                ANTHROPIC,
                vec!["RAG is ", "retrieval."],
                Answer {
                    text: "RAG is retrieval.".into(),
                    tokens_in: Some(12),
                    tokens_out: Some(9),
                    ..Answer::default()
                },
            ),
            (
                Format::Webhook,
                WEBHOOK,
                vec!["Our policy", ": 30 days"],
                Answer {
                    text: "Our policy: 30 days".into(),
                    tokens_in: Some(3),
                    tokens_out: Some(4),
                    ttl_secs: Some(60),
                    ..Answer::default()
                },
            ),
        ];
        for (format, body, pieces, answer) in rows {
            for cut in [1, 5, 64, 100_000] {
                let (got, end) = read(format, body, cut);
                assert_eq!(got, pieces, "{format:?} {cut}");
                assert_eq!(end.as_ref(), Ok(&answer), "{format:?} {cut}");
            }
        }
    }

    #[test]
    fn truncation_and_no_store() {
        let openai = OPENAI.replace("\"finish_reason\":\"stop\"", "\"finish_reason\":\"length\"");
        assert!(read(Format::OpenAi, &openai, 7).1.unwrap().truncated);
        let anthropic = ANTHROPIC.replace("end_turn", "max_tokens");
        assert!(read(Format::Anthropic, &anthropic, 7).1.unwrap().truncated);
        let hook = "data: {\"text\":\"x\"}\n\ndata: {\"end\":true,\"cache\":false}\n\n";
        assert!(read(Format::Webhook, hook, 3).1.unwrap().no_store);
    }

    #[test]
    fn broken_streams_are_errors() {
        let cut_short = &OPENAI[..OPENAI.find("finish_reason\":\"stop").unwrap() - 40];
        let early = || {
            Err::<Answer, _>(BackendError::Unreachable(
                "connection closed before the end of the stream".into(),
            ))
        };
        // (format, body, expected end)
        let rows: Vec<(Format, String, Result<Answer, BackendError>)> = vec![
            (Format::OpenAi, cut_short.to_string(), early()),
            (
                Format::Anthropic,
                ANTHROPIC.replace("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", ""),
                early(),
            ),
            (Format::Webhook, "data: {\"text\":\"a\"}\n\n".into(), early()),
            (
                Format::OpenAi,
                "data: {\"choices\":[{\"delta\":{\"content\":\" \"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n".into(),
                Err(BackendError::Empty),
            ),
            (
                Format::OpenAi,
                "data: {\"choices\":[{\"delta\":{\"content\":7}}]}\n\n".into(),
                Err(BackendError::Malformed(
                    "choices[0].delta.content is not a string".into(),
                )),
            ),
            (
                Format::Anthropic,
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into(),
                Err(BackendError::Malformed("error event: Overloaded".into())),
            ),
            (
                Format::OpenAi,
                "data: {\"error\":{\"message\":\"boom\"}}\n\n".into(),
                Err(BackendError::Malformed("error event: boom".into())),
            ),
            (
                Format::Webhook,
                "data: {\"text\":\"a\"}\n\ndata: {\"error\":\"no index\"}\n\n".into(),
                Err(BackendError::Malformed("error event: \"no index\"".into())),
            ),
            (
                Format::Webhook,
                "data: {\"end\":true,\"ttl\":0}\n\n".into(),
                Err(BackendError::Malformed(
                    "ttl must be an integer between 1 and 315360000".into(),
                )),
            ),
            (
                Format::Webhook,
                "data: [1]\n\n".into(),
                Err(BackendError::Malformed("event is not a JSON object".into())),
            ),
        ];
        for (format, body, want) in rows {
            assert_eq!(read(format, &body, 3).1, want, "{format:?} {body}");
        }
        // Not JSON: the parser's message follows the pinned prefix.
        match read(Format::OpenAi, "data: {nope\n\n", 4).1 {
            Err(BackendError::Malformed(m)) => assert!(m.starts_with("event is not JSON ("), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answer_over_the_limit_stops_at_the_limit() {
        let piece = "x".repeat(300);
        let body: String = (0..5)
            .map(|_| format!("data: {{\"text\":\"{piece}\"}}\n\n"))
            .collect();
        let (pieces, end) = read(Format::Webhook, &body, 50);
        assert_eq!(pieces.concat().len(), 900);
        assert_eq!(end, Err(BackendError::TooLarge(1000)));
    }

    #[test]
    fn streamed_request_bodies() {
        let req = Request {
            question: "q".into(),
            model: "m".into(),
            max_tokens: 5,
            ..Request::default()
        };
        let body = |f| serde_json::from_slice::<Value>(&request_body(f, &req)).unwrap();
        let o = body(Format::OpenAi);
        assert_eq!(o["stream"], true);
        assert_eq!(o["stream_options"], json!({"include_usage": true}));
        assert_eq!(o["model"], "m");
        let a = body(Format::Anthropic);
        assert_eq!(
            (a["stream"].clone(), a["max_tokens"].clone()),
            (json!(true), json!(5))
        );
        assert!(a.get("stream_options").is_none());
        assert_eq!(body(Format::Webhook)["stream"], true);
        assert!(is_event_stream(Some("text/event-stream; charset=utf-8")));
        assert!(is_event_stream(Some("Text/Event-Stream")));
        assert!(!is_event_stream(Some("application/json")));
        assert!(!is_event_stream(None));
    }
}
