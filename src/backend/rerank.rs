//! The rerank API shared by Cohere, Jina, Hugging Face TEI, vLLM, Infinity and llama.cpp's
//! server, for `qa.semantic-verify rerank`.
//!
//! `POST {qa.rerank-url}/rerank` with `{"model", "query", "documents": [..], "top_n"}`; the
//! reply's `results` is a list of `{"index", "relevance_score"}` (other fields ignored). Pure:
//! request and reply only.

use serde_json::{json, Value};

use super::http::Exchange;
use super::BackendError;

pub const PATH: &str = "/rerank";

/// One rerank call: the asker's question against the stored questions of the candidates.
pub struct Rerank<'a> {
    pub model: &'a str,
    pub query: &'a str,
    pub documents: &'a [&'a str],
}

impl Exchange for Rerank<'_> {
    type Output = Vec<Scored>;
    fn path(&self) -> &str {
        PATH
    }
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        if api_key.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", format!("Bearer {api_key}"))]
        }
    }
    fn body(&self) -> Vec<u8> {
        request_body(self.model, self.query, self.documents)
    }
    fn parse(&self, body: &[u8]) -> Result<Vec<Scored>, BackendError> {
        parse_reply(body, self.documents.len())
    }
}

/// A document's relevance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub index: usize,
    pub score: f64,
}

pub fn request_body(model: &str, query: &str, documents: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": model,
        "query": query,
        "documents": documents,
        "top_n": documents.len(),
    }))
    .unwrap_or_default()
}

/// Reads a 2xx reply for `n` documents. Never panics, whatever the bytes: an index out of
/// range, twice, or a score that is not a finite number makes the whole reply malformed (a
/// verifier that cannot be read is a failure, never a yes).
pub fn parse_reply(body: &[u8], n: usize) -> Result<Vec<Scored>, BackendError> {
    let v = super::json(body)?;
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| BackendError::Malformed("no results array".into()))?;
    if results.is_empty() {
        return Err(BackendError::Empty);
    }
    let mut out: Vec<Scored> = Vec::with_capacity(results.len().min(n));
    for r in results {
        let index = r
            .get("index")
            .and_then(Value::as_u64)
            .filter(|i| (*i as usize) < n && *i <= usize::MAX as u64)
            .ok_or_else(|| BackendError::Malformed("result index missing or out of range".into()))?
            as usize;
        let score = r
            .get("relevance_score")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite())
            .ok_or_else(|| BackendError::Malformed("relevance_score is not a number".into()))?;
        if out.iter().any(|s| s.index == index) {
            return Err(BackendError::Malformed("a result index given twice".into()));
        }
        out.push(Scored { index, score });
    }
    Ok(out)
}

/// The best-scored document, if it reaches `threshold`.
pub fn best(scored: &[Scored], threshold: f64) -> Option<Scored> {
    scored
        .iter()
        .copied()
        .filter(|s| s.score >= threshold)
        .max_by(|a, b| a.score.total_cmp(&b.score).then(b.index.cmp(&a.index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request() {
        let b: Value =
            serde_json::from_slice(&request_body("rr", "q?", &["a", "b \"c\""])).unwrap();
        assert_eq!(
            b,
            json!({"model": "rr", "query": "q?", "documents": ["a", "b \"c\""], "top_n": 2})
        );
    }

    /// A reply recorded from Cohere's v2 rerank API (ids shortened).
    const COHERE: &str = r#"{"id":"07734bd2","results":[{"index":1,"relevance_score":0.9990564},
        {"index":0,"relevance_score":0.0011929}],"meta":{"api_version":{"version":"2"},
        "billed_units":{"search_units":1}}}"#;
    /// The same from Hugging Face TEI's OpenAI-style route (vLLM, Infinity, llama.cpp answer
    /// alike, some with a `document` echo).
    const TEI: &str = r#"{"model":"bge-reranker","object":"list","usage":{"total_tokens":9},
        "results":[{"index":0,"relevance_score":0.12,"document":{"text":"a"}},
                   {"index":1,"relevance_score":-3.5}]}"#;

    #[test]
    fn recorded_replies() {
        let s = parse_reply(COHERE.as_bytes(), 2).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].index, 1);
        assert!((s[0].score - 0.9990564).abs() < 1e-9);
        assert_eq!(best(&s, 0.5).map(|b| b.index), Some(1));
        let s = parse_reply(TEI.as_bytes(), 2).unwrap();
        assert_eq!(best(&s, 0.5), None);
        assert_eq!(best(&s, 0.1).map(|b| b.index), Some(0));
        // Raw logits below zero are just low scores.
        assert_eq!(best(&s, -4.0).map(|b| b.index), Some(0));
    }

    #[test]
    fn best_takes_the_highest_and_ties_go_to_the_nearest() {
        // (scores by index, threshold, winner)
        let rows: &[(&[f64], f64, Option<usize>)] = &[
            (&[0.2, 0.9, 0.6], 0.5, Some(1)),
            (&[0.2, 0.4], 0.5, None),
            (&[0.7, 0.7], 0.5, Some(0)),
            (&[0.5], 0.5, Some(0)),
            (&[], 0.0, None),
        ];
        for (scores, t, want) in rows {
            let s: Vec<Scored> = scores
                .iter()
                .enumerate()
                .map(|(index, score)| Scored {
                    index,
                    score: *score,
                })
                .collect();
            assert_eq!(best(&s, *t).map(|b| b.index), *want, "{scores:?}");
        }
    }

    #[test]
    fn hostile_replies_are_errors() {
        let rows: &[&[u8]] = &[
            b"",
            b"not json",
            b"{}",
            b"[]",
            b"{\"results\":{}}",
            b"{\"results\":[{}]}",
            b"{\"results\":[{\"index\":2,\"relevance_score\":1}]}",
            b"{\"results\":[{\"index\":-1,\"relevance_score\":1}]}",
            b"{\"results\":[{\"index\":0.5,\"relevance_score\":1}]}",
            b"{\"results\":[{\"index\":0,\"relevance_score\":\"1\"}]}",
            b"{\"results\":[{\"index\":0,\"relevance_score\":null}]}",
            b"{\"results\":[{\"index\":0,\"relevance_score\":1e999}]}",
            b"{\"results\":[{\"index\":0,\"relevance_score\":1},{\"index\":0,\"relevance_score\":1}]}",
            b"{\"results\":[{\"index\":18446744073709551615,\"relevance_score\":1}]}",
        ];
        for body in rows {
            assert!(
                matches!(
                    parse_reply(body, 2),
                    Err(BackendError::Malformed(_) | BackendError::Empty)
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            parse_reply(b"{\"results\":[]}", 2),
            Err(BackendError::Empty)
        );
        // Arbitrary bytes never panic.
        let mut x = 7u64;
        for n in 0..3000 {
            let bytes: Vec<u8> = (0..n % 80)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"{}[]\",:0123456789.e-results index relevance_score"[(x % 49) as usize]
                })
                .collect();
            let _ = parse_reply(&bytes, (n % 4) as usize);
        }
    }
}
