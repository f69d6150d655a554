//! Anthropic Messages API.
//!
//! `POST {url}/messages` with headers `x-api-key` and `anthropic-version`, body
//! `{"model", "max_tokens", "system"?, "messages": [{"role": "user", "content": <question>}]}`;
//! the answer is the concatenation of the reply's `text` content blocks, cut short if
//! `stop_reason` is `"max_tokens"`.

use serde_json::{json, Value};

use super::{Answer, BackendError, Request, WireFormat};

/// The API version this format speaks (Anthropic requires the header).
pub const VERSION: &str = "2023-06-01";

pub struct Anthropic;

impl WireFormat for Anthropic {
    fn path(&self) -> &'static str {
        "/messages"
    }

    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![("anthropic-version", VERSION.to_string())];
        if !api_key.is_empty() {
            h.push(("x-api-key", api_key.to_string()));
        }
        h
    }

    fn request_body(&self, req: &Request) -> Vec<u8> {
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens,
            "messages": [{"role": "user", "content": req.user_message()}],
        });
        if !req.system.is_empty() {
            body["system"] = Value::String(req.system.clone());
        }
        // Serializing a Value built from strings and numbers cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn parse_reply(&self, body: &[u8]) -> Result<Answer, BackendError> {
        let v = super::json(body)?;
        let blocks = v
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| BackendError::Malformed("no content array".into()))?;
        let mut text = String::new();
        for block in blocks {
            // Other block types (tool_use, thinking) carry no answer text.
            if block.get("type").and_then(Value::as_str) != Some("text") {
                continue;
            }
            match block.get("text") {
                Some(Value::String(t)) => text.push_str(t),
                _ => {
                    return Err(BackendError::Malformed(
                        "text block without a text string".into(),
                    ))
                }
            }
        }
        if text.trim().is_empty() {
            return Err(BackendError::Empty);
        }
        let usage = v.get("usage");
        Ok(Answer {
            text,
            tokens_in: super::count(usage, "input_tokens"),
            tokens_out: super::count(usage, "output_tokens"),
            truncated: v.get("stop_reason").and_then(Value::as_str) == Some("max_tokens"),
            ..Answer::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(system: &str) -> Request {
        Request {
            question: "What is RAG?".into(),
            model: "claude-3-5-haiku-latest".into(),
            system: system.into(),
            max_tokens: 1024,
            ..Request::default()
        }
    }

    #[test]
    fn request_without_system() {
        let body: Value = serde_json::from_slice(&Anthropic.request_body(&req(""))).unwrap();
        assert_eq!(
            body,
            json!({"model": "claude-3-5-haiku-latest", "max_tokens": 1024,
                   "messages": [{"role": "user", "content": "What is RAG?"}]})
        );
    }

    /// The app's context goes into the user message through the (operator's) template.
    #[test]
    fn request_with_context() {
        let r = Request {
            context: "RAG: retrieval, then generation.".into(),
            context_template: "<docs>{context}</docs>\n{question}".into(),
            ..req("")
        };
        let body: Value = serde_json::from_slice(&Anthropic.request_body(&r)).unwrap();
        assert_eq!(
            body["messages"],
            json!([{"role": "user",
                    "content": "<docs>RAG: retrieval, then generation.</docs>\nWhat is RAG?"}])
        );
    }

    #[test]
    fn request_with_system() {
        let body: Value =
            serde_json::from_slice(&Anthropic.request_body(&req("Be brief."))).unwrap();
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn headers() {
        assert_eq!(
            Anthropic.headers(""),
            vec![("anthropic-version", VERSION.to_string())]
        );
        assert_eq!(
            Anthropic.headers("sk-ant-1"),
            vec![
                ("anthropic-version", VERSION.to_string()),
                ("x-api-key", "sk-ant-1".to_string())
            ]
        );
    }

    /// A reply recorded from the Messages API (id shortened).
    const RECORDED: &str = r#"{
      "id": "msg_01X", "type": "message", "role": "assistant",
      "model": "claude-3-5-haiku-20241022",
      "content": [{"type": "text", "text": "RAG is retrieval-augmented generation."}],
      "stop_reason": "end_turn", "stop_sequence": null,
      "usage": {"input_tokens": 12, "output_tokens": 9,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    }"#;

    /// Recorded with `max_tokens: 4`.
    const RECORDED_MAX_TOKENS: &str = r#"{
      "id": "msg_01Y", "type": "message", "role": "assistant",
      "model": "claude-3-5-haiku-20241022",
      "content": [{"type": "text", "text": "RAG is retrieval"}],
      "stop_reason": "max_tokens", "stop_sequence": null,
      "usage": {"input_tokens": 12, "output_tokens": 4}
    }"#;

    #[test]
    fn parses_recorded_replies() {
        let a = Anthropic.parse_reply(RECORDED.as_bytes()).unwrap();
        assert_eq!(
            a,
            Answer {
                text: "RAG is retrieval-augmented generation.".into(),
                tokens_in: Some(12),
                tokens_out: Some(9),
                ..Answer::default()
            }
        );
        let a = Anthropic
            .parse_reply(RECORDED_MAX_TOKENS.as_bytes())
            .unwrap();
        assert!(a.truncated);
        assert_eq!(a.text, "RAG is retrieval");
    }

    #[test]
    fn text_blocks_are_concatenated_and_others_skipped() {
        let body = br#"{"content":[{"type":"text","text":"Hello, "},
                          {"type":"tool_use","id":"t","name":"x","input":{}},
                          {"type":"text","text":"world."}]}"#;
        let a = Anthropic.parse_reply(body).unwrap();
        assert_eq!(a.text, "Hello, world.");
        assert_eq!((a.tokens_in, a.tokens_out), (None, None));
    }

    /// (body, expected error)
    #[test]
    fn bad_replies() {
        let malformed = |s: &str| BackendError::Malformed(s.to_string());
        let rows: &[(&[u8], BackendError)] = &[
            (b"{}", malformed("no content array")),
            (br#"{"content":"hi"}"#, malformed("no content array")),
            (br#"[1]"#, malformed("no content array")),
            (br#"{"content":[]}"#, BackendError::Empty),
            (
                br#"{"content":[{"type":"tool_use","id":"t"}]}"#,
                BackendError::Empty,
            ),
            (
                br#"{"content":[{"type":"text","text":" "}]}"#,
                BackendError::Empty,
            ),
            (
                br#"{"content":[{"type":"text","text":5}]}"#,
                malformed("text block without a text string"),
            ),
            (
                br#"{"content":[{"type":"text"}]}"#,
                malformed("text block without a text string"),
            ),
        ];
        for (body, want) in rows {
            assert_eq!(
                &Anthropic.parse_reply(body).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [&b""[..], b"\xff", b"{\"content\":[", b"null"] {
            assert!(matches!(
                Anthropic.parse_reply(body),
                Err(BackendError::Malformed(_))
            ));
        }
    }
}
