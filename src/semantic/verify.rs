//! The check after the index search (`qa.semantic-verify`) and the audit's comparison of two
//! answers. Runs on a worker only: every call here is HTTP.
//!
//! A verifier that cannot be reached, times out or answers something unreadable is a
//! failure: the caller then calls the backend as on any miss, never serves.

use std::time::Instant;

use crate::backend::http::{self, CallSettings};
use crate::backend::judge::{self, Judge};
use crate::backend::rerank::{self, Rerank};
use crate::backend::Format;
use crate::config::{SemanticSettings, VerifyMode};
use crate::stats;

/// Candidates verified at most per miss (best similarity first).
pub const TOP: usize = 3;

/// A match that cleared the similarity gate and the guards, as read from its entry.
pub struct Candidate<'a> {
    /// The stored question.
    pub question: &'a str,
    pub answer: &'a str,
}

/// The verifier's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve this candidate.
    Accepted(usize),
    /// Every candidate was refused.
    Refused,
    /// The verifier failed (error, timeout, unreadable reply, not configured).
    Failed,
}

/// Verifies `candidates` (best first) for the question `asked`, before `deadline`. `chat`
/// and `model` are the backend's (for `llm`).
pub fn verify(
    s: &SemanticSettings,
    chat: &CallSettings,
    model: &str,
    asked: &str,
    candidates: &[Candidate<'_>],
    deadline: Instant,
) -> Verdict {
    let candidates = &candidates[..candidates.len().min(TOP)];
    if candidates.is_empty() {
        return Verdict::Refused;
    }
    let verdict = match s.verify {
        VerifyMode::none => Verdict::Accepted(0),
        VerifyMode::llm => by_llm(chat, model, asked, candidates, deadline),
        VerifyMode::rerank => by_rerank(s, asked, candidates, deadline),
    };
    match verdict {
        Verdict::Accepted(_) => stats::VERIFY_ACCEPTED.bump(),
        Verdict::Refused => stats::VERIFY_REFUSED.bump(),
        Verdict::Failed => stats::VERIFY_ERRORS.bump(),
    }
    verdict
}

/// One yes/no question per candidate, best first; the first clear yes wins.
fn by_llm(
    chat: &CallSettings,
    model: &str,
    asked: &str,
    candidates: &[Candidate<'_>],
    deadline: Instant,
) -> Verdict {
    if chat.format == Format::Webhook {
        // A webhook cannot be asked a yes/no question: refused, counted, never served.
        stats::VERIFY_UNSUPPORTED.bump();
        return Verdict::Failed;
    }
    for (i, c) in candidates.iter().enumerate() {
        let prompt = judge::verify_prompt(asked, c.question, c.answer);
        match ask(chat, model, &prompt, deadline) {
            Some(true) => return Verdict::Accepted(i),
            Some(false) => continue,
            None => return Verdict::Failed,
        }
    }
    Verdict::Refused
}

/// Asks the chat backend a yes/no question: `Some(yes)`, or `None` if the call failed.
fn ask(chat: &CallSettings, model: &str, prompt: &str, deadline: Instant) -> Option<bool> {
    stats::VERIFY_CALLS.bump();
    let call = Judge {
        format: chat.format,
        model,
        prompt,
    };
    match http::exchange(chat, &call, deadline).0 {
        Ok(a) => {
            stats::VERIFY_TOKENS_IN.add(a.tokens_in.unwrap_or(0));
            stats::VERIFY_TOKENS_OUT.add(a.tokens_out.unwrap_or(0));
            Some(judge::is_yes(&a.text))
        }
        // An empty reply is an unclear one, not a failure of the backend.
        Err(crate::backend::BackendError::Empty) => Some(false),
        Err(_) => None,
    }
}

/// One rerank call over the candidates' stored questions; the best score wins if it reaches
/// `qa.semantic-verify-threshold`.
fn by_rerank(
    s: &SemanticSettings,
    asked: &str,
    candidates: &[Candidate<'_>],
    deadline: Instant,
) -> Verdict {
    stats::VERIFY_CALLS.bump();
    let documents: Vec<&str> = candidates.iter().map(|c| c.question).collect();
    let call = Rerank {
        model: &s.rerank_model,
        query: asked,
        documents: &documents,
    };
    match http::exchange(&s.rerank, &call, deadline).0 {
        Ok(scored) => match rerank::best(&scored, s.verify_threshold as f64) {
            Some(best) => Verdict::Accepted(best.index),
            None => Verdict::Refused,
        },
        Err(_) => Verdict::Failed,
    }
}

/// The audit's comparison of a served answer with the backend's fresh one: `Some(agree)`, or
/// `None` if it could not be judged. With the OpenAI or Anthropic format the backend is asked
/// whether they say the same thing; a webhook (often a deterministic pipeline) must answer
/// the same text, spaces around it aside.
pub fn answers_agree(
    chat: &CallSettings,
    model: &str,
    asked: &str,
    served: &str,
    fresh: &str,
    deadline: Instant,
) -> Option<bool> {
    if served.trim() == fresh.trim() {
        return Some(true);
    }
    if chat.format == Format::Webhook {
        return Some(false);
    }
    let call = Judge {
        format: chat.format,
        model,
        prompt: &judge::audit_prompt(asked, served, fresh),
    };
    stats::AUDIT_CALLS.bump();
    match http::exchange(chat, &call, deadline).0 {
        Ok(a) => {
            stats::AUDIT_TOKENS_IN.add(a.tokens_in.unwrap_or(0));
            stats::AUDIT_TOKENS_OUT.add(a.tokens_out.unwrap_or(0));
            Some(judge::is_yes(&a.text))
        }
        Err(crate::backend::BackendError::Empty) => Some(false),
        Err(_) => None,
    }
}
