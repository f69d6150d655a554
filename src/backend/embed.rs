//! OpenAI-compatible embeddings, for the semantic tier.
//!
//! `POST {qa.embed-url}/embeddings` with `{"model", "input"}`; the vector is
//! `data[0].embedding`, token usage `usage.prompt_tokens`. Pure: request and reply only.

use serde_json::{json, Value};

use super::BackendError;
use crate::semantic::index::{self, MAX_DIMS};

/// What the embedding backend answered: a unit vector and the tokens it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub tokens: Option<u64>,
}

pub const PATH: &str = "/embeddings";

pub fn headers(api_key: &str) -> Vec<(&'static str, String)> {
    if api_key.is_empty() {
        Vec::new()
    } else {
        vec![("Authorization", format!("Bearer {api_key}"))]
    }
}

pub fn request_body(model: &str, input: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "input": input})).unwrap_or_default()
}

/// Reads a 2xx reply. Never panics, whatever the bytes: a vector that is empty, too long,
/// not all finite numbers, or all zeros is refused; a good one is scaled to unit length.
pub fn parse_reply(body: &[u8]) -> Result<Embedding, BackendError> {
    let v = super::json(body)?;
    let raw = v
        .get("data")
        .and_then(|d| d.get(0))
        .and_then(|d| d.get("embedding"))
        .and_then(Value::as_array)
        .ok_or_else(|| BackendError::Malformed("no data[0].embedding array".into()))?;
    if raw.is_empty() || raw.len() > MAX_DIMS {
        return Err(BackendError::Malformed(format!(
            "embedding has {} dimensions (1 to {MAX_DIMS} accepted)",
            raw.len()
        )));
    }
    let mut floats = Vec::with_capacity(raw.len());
    for x in raw {
        let f = x
            .as_f64()
            .filter(|f| f.is_finite() && f.abs() <= f32::MAX as f64)
            .ok_or_else(|| BackendError::Malformed("embedding holds a non-number".into()))?;
        floats.push(f as f32);
    }
    let vector = index::unit(&floats)
        .ok_or_else(|| BackendError::Malformed("embedding is all zeros".into()))?;
    Ok(Embedding {
        vector,
        tokens: super::count(v.get("usage"), "prompt_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request() {
        let b: Value = serde_json::from_slice(&request_body("m", "What is \"RAG\"?")).unwrap();
        assert_eq!(b, json!({"model": "m", "input": "What is \"RAG\"?"}));
        assert!(headers("").is_empty());
        assert_eq!(
            headers("k"),
            vec![("Authorization", "Bearer k".to_string())]
        );
    }

    #[test]
    fn recorded_reply() {
        let body = br#"{"object":"list","data":[{"object":"embedding","index":0,
            "embedding":[3.0,4.0]}],"model":"text-embedding-3-small",
            "usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        let e = parse_reply(body).unwrap();
        assert_eq!(e.tokens, Some(5));
        assert!((e.vector[0] - 0.6).abs() < 1e-6 && (e.vector[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn hostile_replies_are_errors() {
        let long = format!(
            "{{\"data\":[{{\"embedding\":[{}]}}]}}",
            vec!["1"; MAX_DIMS + 1].join(",")
        );
        let rows: Vec<&[u8]> = vec![
            b"",
            b"not json",
            b"{}",
            b"{\"data\":[]}",
            b"{\"data\":[{\"embedding\":[]}]}",
            b"{\"data\":[{\"embedding\":\"x\"}]}",
            b"{\"data\":[{\"embedding\":[1,\"2\"]}]}",
            b"{\"data\":[{\"embedding\":[0,0,0]}]}",
            b"{\"data\":[{\"embedding\":[1e300,1]}]}",
            b"{\"data\":[{\"embedding\":[null]}]}",
            long.as_bytes(),
        ];
        for body in rows {
            assert!(
                matches!(parse_reply(body), Err(BackendError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Arbitrary bytes never panic.
        let mut x = 1u64;
        for n in 0..2000 {
            let bytes: Vec<u8> = (0..n % 64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"{}[]\",:0123456789.e-data embedding"[(x % 33) as usize]
                })
                .collect();
            let _ = parse_reply(&bytes);
        }
    }
}
