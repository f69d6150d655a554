//! Yes/no questions to the configured chat backend: `qa.semantic-verify llm` (would this
//! answer correctly answer both questions?) and the audit (do these two answers say the same
//! thing?).
//!
//! Sent in the backend's own wire format (OpenAI-compatible or Anthropic) with the same URL,
//! model and key as misses, `temperature` 0 and a tiny `max_tokens`. The webhook format has no
//! way to ask a yes/no question, so it is never judged (see `worker`). Only a clear "yes"
//! (case, surrounding spaces and one trailing `.` or `!` aside) is a yes: anything else,
//! "Yes, but..." included, is a refusal.

use serde_json::json;

use super::http::Exchange;
use super::{Answer, BackendError, Format};

/// `max_tokens` of a judgement: room for "yes"/"no" and nothing more.
pub const MAX_TOKENS: u32 = 3;

const SYSTEM: &str =
    "You check a question-answering cache. Reply with exactly one word: yes or no.";

/// The question for `qa.semantic-verify llm`.
pub fn verify_prompt(asked: &str, stored: &str, answer: &str) -> String {
    format!(
        "Question A: {asked}\nQuestion B: {stored}\nAnswer given to question B: {answer}\n\n\
         Would this answer correctly and completely answer question A as well? Reply yes or no."
    )
}

/// The question an audit asks about a served answer and the backend's fresh one.
pub fn audit_prompt(asked: &str, served: &str, fresh: &str) -> String {
    format!(
        "Question: {asked}\nAnswer 1: {served}\nAnswer 2: {fresh}\n\n\
         Do these two answers say the same thing (the same facts, no contradiction)? Reply yes or no."
    )
}

/// One yes/no call in the backend's wire format.
pub struct Judge<'a> {
    pub format: Format,
    pub model: &'a str,
    pub prompt: &'a str,
}

impl Exchange for Judge<'_> {
    type Output = Answer;
    fn path(&self) -> &str {
        self.format.wire().path()
    }
    fn headers(&self, api_key: &str) -> Vec<(&'static str, String)> {
        self.format.wire().headers(api_key)
    }
    fn body(&self) -> Vec<u8> {
        request_body(self.format, self.model, self.prompt)
    }
    fn parse(&self, body: &[u8]) -> Result<Answer, BackendError> {
        self.format.wire().parse_reply(body)
    }
}

/// The request body; `None`-like empty body for the webhook format (never sent).
pub fn request_body(format: Format, model: &str, prompt: &str) -> Vec<u8> {
    let body = match format {
        Format::OpenAi => json!({
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }),
        Format::Anthropic => json!({
            "model": model,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": prompt}],
        }),
        Format::Webhook => return Vec::new(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Whether a reply is a clear yes.
pub fn is_yes(text: &str) -> bool {
    let t = text.trim();
    let t = t
        .strip_suffix('.')
        .or_else(|| t.strip_suffix('!'))
        .unwrap_or(t)
        .trim_end();
    t.eq_ignore_ascii_case("yes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn clear_yes_only() {
        // (reply, is a yes)
        let rows = [
            ("yes", true),
            ("Yes", true),
            (" YES.\n", true),
            ("yes!", true),
            ("no", false),
            ("No.", false),
            ("", false),
            ("yes, but only for books", false),
            ("Yes and no", false),
            ("maybe", false),
            ("y", false),
            ("yes..", false),
            ("\"yes\"", false),
            ("yesterday", false),
            ("ｙｅｓ", false),
        ];
        for (text, want) in rows {
            assert_eq!(is_yes(text), want, "{text:?}");
        }
    }

    #[test]
    fn bodies() {
        let b: Value = serde_json::from_slice(&request_body(Format::OpenAi, "m", "p?")).unwrap();
        assert_eq!(b["model"], "m");
        assert_eq!(b["max_tokens"], MAX_TOKENS);
        assert_eq!(b["messages"][0]["role"], "system");
        assert_eq!(b["messages"][1], json!({"role": "user", "content": "p?"}));
        let b: Value = serde_json::from_slice(&request_body(Format::Anthropic, "m", "p?")).unwrap();
        assert_eq!(b["max_tokens"], MAX_TOKENS);
        assert_eq!(b["system"], SYSTEM);
        assert_eq!(b["messages"][0], json!({"role": "user", "content": "p?"}));
        assert!(request_body(Format::Webhook, "m", "p?").is_empty());
        let p = verify_prompt("A?", "B?", "ans");
        assert!(p.contains("Question A: A?") && p.contains("Question B: B?") && p.contains("ans"));
    }
}
