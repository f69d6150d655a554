//! OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, LiteLLM).
//!
//! `POST {url}/chat/completions` with `{"model", "messages": [system?, user]}`;
//! the answer is `choices[0].message.content`, cut short if `finish_reason` is `"length"`.

use serde_json::{json, Value};

use super::{Answer, BackendError, Request, WireFormat};

pub struct OpenAi;

impl WireFormat for OpenAi {
    fn path(&self) -> &'static str {
        "/chat/completions"
    }

    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        if api_key.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", format!("Bearer {api_key}"))]
        }
    }

    fn request_body(&self, req: &Request) -> Vec<u8> {
        let mut messages = Vec::with_capacity(2);
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        messages.push(json!({"role": "user", "content": req.user_message()}));
        // Serializing a Value built from strings cannot fail.
        serde_json::to_vec(&json!({"model": req.model, "messages": messages})).unwrap_or_default()
    }

    fn parse_reply(&self, body: &[u8]) -> Result<Answer, BackendError> {
        let v = super::json(body)?;
        let choice = v.get("choices").and_then(|c| c.get(0));
        let content = choice
            .and_then(|c| c.get("message"))
            .and_then(|m| m.get("content"))
            .ok_or_else(|| BackendError::Malformed("no choices[0].message.content".into()))?;
        let text = match content {
            Value::String(s) => s.clone(),
            Value::Null => return Err(BackendError::Empty),
            _ => {
                return Err(BackendError::Malformed(
                    "choices[0].message.content is not a string".into(),
                ))
            }
        };
        if text.trim().is_empty() {
            return Err(BackendError::Empty);
        }
        let usage = v.get("usage");
        let finish = choice.and_then(|c| c.get("finish_reason"));
        Ok(Answer {
            text,
            tokens_in: super::count(usage, "prompt_tokens"),
            tokens_out: super::count(usage, "completion_tokens"),
            truncated: finish.and_then(Value::as_str) == Some("length"),
            ..Answer::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(system: &str) -> Request {
        Request {
            question: "What is \"RAG\"?\n".into(),
            model: "gpt-4o-mini".into(),
            system: system.into(),
            ..Request::default()
        }
    }

    #[test]
    fn request_without_system() {
        let body: Value = serde_json::from_slice(&OpenAi.request_body(&req(""))).unwrap();
        assert_eq!(
            body,
            json!({"model": "gpt-4o-mini",
                   "messages": [{"role": "user", "content": "What is \"RAG\"?\n"}]})
        );
    }

    /// The app's context goes into the user message through the template.
    #[test]
    fn request_with_context() {
        let r = Request {
            context: "Refunds: 30 days.".into(),
            context_template: crate::backend::DEFAULT_CONTEXT_TEMPLATE.into(),
            ..req("Be brief.")
        };
        let body: Value = serde_json::from_slice(&OpenAi.request_body(&r)).unwrap();
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "Answer the question using only the context below.\n\nContext:\nRefunds: 30 days.\n\nQuestion: What is \"RAG\"?\n"})
        );
        assert_eq!(body["messages"][0]["content"], "Be brief.");
    }

    #[test]
    fn request_with_system() {
        let body: Value = serde_json::from_slice(&OpenAi.request_body(&req("Be brief."))).unwrap();
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(body["messages"][1]["role"], "user");
    }

    #[test]
    fn headers() {
        assert!(OpenAi.headers("").is_empty());
        assert_eq!(
            OpenAi.headers("sk-1"),
            vec![("Authorization", "Bearer sk-1".to_string())]
        );
    }

    /// A reply recorded from the OpenAI API (ids shortened).
    const RECORDED: &str = r#"{
      "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000,
      "model": "gpt-4o-mini-2024-07-18",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Refunds within 30 days.",
                   "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}
    }"#;

    #[test]
    fn parses_recorded_reply() {
        let a = OpenAi.parse_reply(RECORDED.as_bytes()).unwrap();
        assert_eq!(a.text, "Refunds within 30 days.");
        assert_eq!((a.tokens_in, a.tokens_out), (Some(14), Some(6)));
        assert!(!a.truncated);
    }

    /// Recorded with `max_tokens: 5`: the completion stops mid-sentence.
    const RECORDED_LENGTH: &str = r#"{
      "id": "chatcmpl-def", "object": "chat.completion", "created": 1700000001,
      "model": "gpt-4o-mini-2024-07-18",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "Refunds are accepted within"},
                   "logprobs": null, "finish_reason": "length"}],
      "usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19}
    }"#;

    #[test]
    fn a_length_finish_is_truncated() {
        let a = OpenAi.parse_reply(RECORDED_LENGTH.as_bytes()).unwrap();
        assert_eq!(a.text, "Refunds are accepted within");
        assert!(a.truncated);
        assert_eq!(a.tokens_out, Some(5));
    }

    #[test]
    fn parses_minimal_reply_without_usage() {
        let a = OpenAi
            .parse_reply(br#"{"choices":[{"message":{"content":"hi"}}]}"#)
            .unwrap();
        assert_eq!(
            a,
            Answer {
                text: "hi".into(),
                ..Answer::default()
            }
        );
    }

    /// (body, expected error)
    #[test]
    fn bad_replies() {
        let malformed = |s: &str| BackendError::Malformed(s.to_string());
        let rows: &[(&[u8], BackendError)] = &[
            (b"{}", malformed("no choices[0].message.content")),
            (
                br#"{"choices":[]}"#,
                malformed("no choices[0].message.content"),
            ),
            (
                br#"{"choices":[{"message":{}}]}"#,
                malformed("no choices[0].message.content"),
            ),
            (
                br#"{"choices":[{"message":{"content":42}}]}"#,
                malformed("choices[0].message.content is not a string"),
            ),
            (
                br#"{"choices":[{"message":{"content":null}}]}"#,
                BackendError::Empty,
            ),
            (
                br#"{"choices":[{"message":{"content":"  \n"}}]}"#,
                BackendError::Empty,
            ),
            (br#"[1,2]"#, malformed("no choices[0].message.content")),
        ];
        for (body, want) in rows {
            assert_eq!(
                &OpenAi.parse_reply(body).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        // Not JSON at all: the parser's own message follows, so only the prefix is pinned.
        for body in [&b""[..], b"<html>", b"\xff\xff", b"{\"choices\":"] {
            match OpenAi.parse_reply(body) {
                Err(BackendError::Malformed(m)) => assert!(m.starts_with("not JSON ("), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
