//! Webhook: your own service (a whole RAG pipeline) behind `QA.GET`.
//!
//! `POST {url}` (the URL as configured, nothing appended) with
//! `{"cache", "question", "normalized", "model", "system"}` and, if a key is configured,
//! `Authorization: Bearer <key>`. The reply is `{"answer": "..."}`, optionally with
//! `"ttl": <seconds>` (the entry's lifetime instead of the asker's), `"cache": false` (answer
//! without storing) and `"tokens_in"` / `"tokens_out"` (kept with the entry).

use serde_json::{json, Value};

use super::{Answer, BackendError, Request, WireFormat, MAX_TTL_SECS};

pub struct Webhook;

impl WireFormat for Webhook {
    fn path(&self) -> &'static str {
        ""
    }

    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        if api_key.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", format!("Bearer {api_key}"))]
        }
    }

    fn request_body(&self, req: &Request) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "cache": req.cache,
            "question": req.question,
            "normalized": req.normalized,
            "model": req.model,
            "system": req.system,
        }))
        .unwrap_or_default()
    }

    fn parse_reply(&self, body: &[u8]) -> Result<Answer, BackendError> {
        let v = super::json(body)?;
        if !v.is_object() {
            return Err(BackendError::Malformed("not a JSON object".into()));
        }
        let text = match v.get("answer") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(BackendError::Empty),
            Some(_) => return Err(BackendError::Malformed("answer is not a string".into())),
        };
        if text.trim().is_empty() {
            return Err(BackendError::Empty);
        }
        let ttl_secs = match v.get("ttl") {
            None | Some(Value::Null) => None,
            Some(t) => Some(
                t.as_i64()
                    .filter(|t| (1..=MAX_TTL_SECS).contains(t))
                    .ok_or_else(|| {
                        BackendError::Malformed(
                            "ttl must be an integer between 1 and 315360000".into(),
                        )
                    })?,
            ),
        };
        let no_store = match v.get("cache") {
            None | Some(Value::Null) | Some(Value::Bool(true)) => false,
            Some(Value::Bool(false)) => true,
            Some(_) => {
                return Err(BackendError::Malformed(
                    "cache must be true or false".into(),
                ))
            }
        };
        Ok(Answer {
            text,
            tokens_in: super::count(Some(&v), "tokens_in"),
            tokens_out: super::count(Some(&v), "tokens_out"),
            truncated: false,
            no_store,
            ttl_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request() {
        let req = Request {
            question: "What is our refund policy?".into(),
            normalized: "what is our refund policy".into(),
            model: "gpt-4o-mini".into(),
            system: String::new(),
            cache: "support:acme".into(),
            max_tokens: 1024,
        };
        let body: Value = serde_json::from_slice(&Webhook.request_body(&req)).unwrap();
        assert_eq!(
            body,
            json!({"cache": "support:acme", "question": "What is our refund policy?",
                   "normalized": "what is our refund policy", "model": "gpt-4o-mini",
                   "system": ""})
        );
        assert_eq!(Webhook.path(), "");
        assert_eq!(
            Webhook.headers("k"),
            vec![("Authorization", "Bearer k".to_string())]
        );
    }

    /// (reply, expected answer)
    #[test]
    fn replies() {
        let rows: &[(&str, Answer)] = &[
            (
                r#"{"answer": "30 days."}"#,
                Answer {
                    text: "30 days.".into(),
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "30 days.", "ttl": 60, "sources": ["kb/12"]}"#,
                Answer {
                    text: "30 days.".into(),
                    ttl_secs: Some(60),
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "It is 14:02.", "cache": false}"#,
                Answer {
                    text: "It is 14:02.".into(),
                    no_store: true,
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "x", "cache": true, "ttl": null, "tokens_in": 900, "tokens_out": 40}"#,
                Answer {
                    text: "x".into(),
                    tokens_in: Some(900),
                    tokens_out: Some(40),
                    ..Answer::default()
                },
            ),
        ];
        for (body, want) in rows {
            assert_eq!(
                &Webhook.parse_reply(body.as_bytes()).unwrap(),
                want,
                "{body}"
            );
        }
    }

    /// (reply, expected error)
    #[test]
    fn bad_replies() {
        let malformed = |s: &str| BackendError::Malformed(s.to_string());
        let ttl = malformed("ttl must be an integer between 1 and 315360000");
        let rows: &[(&str, BackendError)] = &[
            ("[]", malformed("not a JSON object")),
            ("\"hi\"", malformed("not a JSON object")),
            ("{}", BackendError::Empty),
            (r#"{"answer": null}"#, BackendError::Empty),
            (r#"{"answer": "  "}"#, BackendError::Empty),
            (r#"{"answer": 3}"#, malformed("answer is not a string")),
            (r#"{"answer": "a", "ttl": 0}"#, ttl.clone()),
            (r#"{"answer": "a", "ttl": -5}"#, ttl.clone()),
            (r#"{"answer": "a", "ttl": 1.5}"#, ttl.clone()),
            (r#"{"answer": "a", "ttl": "60"}"#, ttl.clone()),
            (r#"{"answer": "a", "ttl": 315360001}"#, ttl),
            (
                r#"{"answer": "a", "cache": "no"}"#,
                malformed("cache must be true or false"),
            ),
        ];
        for (body, want) in rows {
            assert_eq!(
                &Webhook.parse_reply(body.as_bytes()).unwrap_err(),
                want,
                "{body}"
            );
        }
        assert!(matches!(
            Webhook.parse_reply(b"\xff{"),
            Err(BackendError::Malformed(_))
        ));
    }
}
