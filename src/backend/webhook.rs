//! Webhook: your own service (a whole RAG pipeline) behind `QA.GET`.
//!
//! `POST {url}` (the URL as configured, nothing appended) with
//! `{"cache", "question", "normalized", "model", "system"}` (plus `"context"` when the asker
//! sent `CONTEXT`) and, if a key is configured, `Authorization: Bearer <key>`. The reply is
//! `{"answer": "..."}`, optionally with `"ttl": <seconds>` (the entry's lifetime instead of
//! the asker's), `"cache": false` (answer without storing), `"tokens_in"` / `"tokens_out"`
//! (kept with the entry) and `"sources"`: the ids of the documents the answer cites (see
//! `crate::sources` for their bounds), kept with the entry for `QA.INVALIDATE ... SOURCE`.

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
        let mut body = json!({
            "cache": req.cache,
            "question": req.question,
            "normalized": req.normalized,
            "model": req.model,
            "system": req.system,
        });
        if !req.context.is_empty() {
            body["context"] = Value::String(req.context.clone());
        }
        serde_json::to_vec(&body).unwrap_or_default()
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
        Ok(Answer {
            text,
            tokens_in: super::count(Some(&v), "tokens_in"),
            tokens_out: super::count(Some(&v), "tokens_out"),
            truncated: false,
            no_store: no_store(v.get("cache"))?,
            ttl_secs: ttl(v.get("ttl"))?,
            sources: sources(v.get("sources"))?,
        })
    }
}

/// The `"ttl"` of a reply (also of a streamed reply's end event): absent, null, or whole
/// seconds from 1 to [`MAX_TTL_SECS`].
pub(crate) fn ttl(v: Option<&Value>) -> Result<Option<i64>, BackendError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(t) => t
            .as_i64()
            .filter(|t| (1..=MAX_TTL_SECS).contains(t))
            .map(Some)
            .ok_or_else(|| {
                BackendError::Malformed("ttl must be an integer between 1 and 315360000".into())
            }),
    }
}

/// Whether a reply (or a streamed reply's end event) says `"cache": false`.
pub(crate) fn no_store(v: Option<&Value>) -> Result<bool, BackendError> {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Ok(false),
        Some(Value::Bool(false)) => Ok(true),
        Some(_) => Err(BackendError::Malformed(
            "cache must be true or false".into(),
        )),
    }
}

/// The `"sources"` of a reply: absent, null or an array of document ids (strings; see
/// `crate::sources::valid_id`, at most `MAX_SOURCES` different ones).
pub(crate) fn sources(v: Option<&Value>) -> Result<Vec<u8>, BackendError> {
    let bad = || {
        BackendError::Malformed(format!(
            "sources must be an array of at most {} document ids of 1 to {} bytes without control characters",
            crate::sources::MAX_SOURCES,
            crate::sources::MAX_ID_BYTES
        ))
    };
    let items = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad()),
    };
    let mut ids = Vec::with_capacity(items.len().min(crate::sources::MAX_SOURCES + 1));
    for item in items {
        ids.push(item.as_str().ok_or_else(bad)?.as_bytes());
    }
    crate::sources::encode(ids).ok_or_else(bad)
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
            ..Request::default()
        };
        let body: Value = serde_json::from_slice(&Webhook.request_body(&req)).unwrap();
        assert_eq!(
            body,
            json!({"cache": "support:acme", "question": "What is our refund policy?",
                   "normalized": "what is our refund policy", "model": "gpt-4o-mini",
                   "system": ""})
        );
        // The app's retrieved context, as is (the template is for the chat formats only).
        let with = Request {
            context: "Refunds: 30 days.".into(),
            context_template: "ignored {context}".into(),
            ..req.clone()
        };
        let body: Value = serde_json::from_slice(&Webhook.request_body(&with)).unwrap();
        assert_eq!(body["context"], "Refunds: 30 days.");
        assert_eq!(body["question"], "What is our refund policy?");
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
                    sources: b"kb/12".to_vec(),
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "a", "sources": ["b.md", "a.md", "b.md"]}"#,
                Answer {
                    text: "a".into(),
                    sources: b"b.md\na.md".to_vec(), // repeats dropped, order kept
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "a", "sources": []}"#,
                Answer {
                    text: "a".into(),
                    ..Answer::default()
                },
            ),
            (
                r#"{"answer": "a", "sources": null}"#,
                Answer {
                    text: "a".into(),
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
        let src = malformed("sources must be an array of at most 32 document ids of 1 to 256 bytes without control characters");
        let too_many = format!(
            r#"{{"answer": "a", "sources": [{}]}}"#,
            (0..33)
                .map(|i| format!("\"d{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let too_long = format!(r#"{{"answer": "a", "sources": ["{}"]}}"#, "x".repeat(257));
        let src_rows: &[&str] = &[
            r#"{"answer": "a", "sources": "a.md"}"#,
            r#"{"answer": "a", "sources": [1]}"#,
            r#"{"answer": "a", "sources": [""]}"#,
            r#"{"answer": "a", "sources": ["a\nb"]}"#,
            r#"{"answer": "a", "sources": [["a"]]}"#,
            r#"{"answer": "a", "sources": {"a": 1}}"#,
            &too_many,
            &too_long,
        ];
        for body in src_rows {
            assert_eq!(
                Webhook.parse_reply(body.as_bytes()).unwrap_err(),
                src,
                "{body}"
            );
        }
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
