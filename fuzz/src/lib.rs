//! Fuzz checks for redis-qa's pure core. Each function takes arbitrary bytes, runs one part
//! of the core on them and panics if an invariant breaks (a panic in the core itself is a
//! finding too: the module must never panic on what a client or a backend sent).
//!
//! The same functions are the bodies of the `cargo fuzz` targets (`fuzz_targets/`, nightly)
//! and of `tests/props.rs`, which runs them on generated inputs with stable `cargo test`.

use redis_qa::backend::{
    anthropic::Anthropic, excerpt as body_excerpt, openai::OpenAi, webhook::Webhook, Answer,
    BackendError, WireFormat,
};
use redis_qa::commands::args::{self, Allowed};
use redis_qa::config::{valid_model, valid_system, MAX_TTL_SECS};
use redis_qa::entry::v2;
use redis_qa::keys::{entry_key_into, key_len, prefix_state, validate_cache_name};
use redis_qa::normalize::{normalize, NORMALIZATION_VERSION};
use sha2::{Digest, Sha256};

/// Sentence punctuation stripped from the end of every word (README, Normalization).
fn is_sentence_punct(c: char) -> bool {
    matches!(
        c,
        '?' | '!' | '.' | ',' | ';' | ':' | '\u{3002}' | '\u{3001}'
    )
}

/// Checks the shape of a normalized question: one space between non-empty words, no other
/// whitespace, no word ending in sentence punctuation.
fn check_normalized(input: &str, n: &str) {
    assert!(
        !n.starts_with(' ') && !n.ends_with(' '),
        "{input:?} -> {n:?}"
    );
    assert!(!n.contains("  "), "{input:?} -> {n:?}");
    assert!(
        n.chars().all(|c| c == ' ' || !c.is_whitespace()),
        "{input:?} -> {n:?}"
    );
    assert!(
        !n.contains(['\u{200B}', '\u{FEFF}']),
        "invisible characters must be dropped: {input:?} -> {n:?}"
    );
    for word in n.split(' ').filter(|_| !n.is_empty()) {
        let last = word.chars().next_back();
        assert!(
            last.is_some_and(|c| !is_sentence_punct(c)),
            "word {word:?} of {input:?} -> {n:?}"
        );
    }
}

/// Normalization as the rules say; set `QA_FUZZ_IDEMPOTENT=1` to also require that a
/// normalized question normalizes to itself (it does not always: see the report).
pub fn normalize_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let n = normalize(&text);
    check_normalized(&text, &n);
    // Deterministic, and the ASCII fast path agrees with itself on re-runs.
    assert_eq!(normalize(&text), n);
    if idempotence_checked() {
        assert_eq!(normalize(&n), n, "not a fixed point: {text:?} -> {n:?}");
    }
    if data.len() >= 3 {
        derive_keys(data);
    }
    let _ = validate_cache_name(data);
}

fn idempotence_checked() -> bool {
    std::env::var_os("QA_FUZZ_IDEMPOTENT").is_some_and(|v| v == "1")
}

fn lp(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

/// The documented encoding, written out independently of `keys.rs`.
fn reference_digest(model: &str, system: &str, generation: &[u8], question: &str) -> String {
    let mut header = Vec::new();
    for f in [NORMALIZATION_VERSION, model, system] {
        header.extend_from_slice(&(f.len() as u64).to_be_bytes());
        header.extend_from_slice(f.as_bytes());
    }
    while header.len() % 64 != 0 {
        header.push(0);
    }
    let mut h = Sha256::new();
    h.update(&header);
    lp(&mut h, generation);
    lp(&mut h, question.as_bytes());
    // Keys carry the first 128 bits of the digest.
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key(cache: &[u8], model: &str, system: &str, generation: &[u8], question: &str) -> Vec<u8> {
    let mut out = Vec::new();
    entry_key_into(
        &prefix_state(model, system),
        cache,
        generation,
        question,
        &mut out,
    );
    out
}

/// Splits `data` into model, system, generation and question by the lengths in its first
/// three bytes; checks the key's shape, the documented encoding, and that moving a field
/// boundary changes the key (the length prefixes make the encoding unambiguous).
fn derive_keys(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[3..]).into_owned();
    let mut cuts = [data[0] as usize, data[1] as usize, data[2] as usize];
    let mut rest: &str = &text;
    let mut fields: Vec<&str> = Vec::new();
    for cut in cuts.iter_mut() {
        let mut at = (*cut).min(rest.len());
        while !rest.is_char_boundary(at) {
            at -= 1;
        }
        *cut = at;
        let (f, r) = rest.split_at(at);
        fields.push(f);
        rest = r;
    }
    let (model, system, generation, question) = (fields[0], fields[1], fields[2], rest);
    let cache = b"c";
    let k = key(cache, model, system, generation.as_bytes(), question);
    assert_eq!(k.len(), key_len(cache.len()));
    assert!(k.starts_with(b"qa:{c}:"));
    let hex = &k[7..];
    assert_eq!(
        std::str::from_utf8(hex).unwrap(),
        reference_digest(model, system, generation.as_bytes(), question)
    );
    // Every field boundary moved by one character gives another key.
    let joined = [model, system, generation, question];
    for i in 0..3 {
        if let Some(c) = joined[i].chars().next_back() {
            let mut moved: Vec<String> = joined.iter().map(|s| s.to_string()).collect();
            moved[i].pop();
            moved[i + 1].insert(0, c);
            let k2 = key(cache, &moved[0], &moved[1], moved[2].as_bytes(), &moved[3]);
            assert_ne!(k, k2, "fields {joined:?} and {moved:?} share a key");
        }
    }
}

/// What every parser must guarantee for any body.
fn check_reply(r: Result<Answer, BackendError>) {
    match r {
        Ok(a) => {
            assert!(!a.text.trim().is_empty(), "an empty answer was accepted");
            if let Some(t) = a.ttl_secs {
                assert!((1..=MAX_TTL_SECS).contains(&t), "ttl {t}");
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.contains(['\r', '\n', '\0']),
                "multi-line error reply {text:?}"
            );
            assert!(text.len() <= 300, "long error reply ({} bytes)", text.len());
            assert!(
                matches!(e, BackendError::Malformed(_) | BackendError::Empty),
                "a parser returned {e:?}"
            );
        }
    }
}

/// Raw bytes half the time; otherwise `data[1..]` spliced as a JSON fragment into a
/// well-formed reply of the format, where the parser has to look deeper.
fn parse_with(data: &[u8], format: &dyn WireFormat, templates: &[&str]) {
    check_reply(format.parse_reply(data));
    if let Some((&sel, frag)) = data.split_first() {
        let t = templates[sel as usize % templates.len()];
        let body = t.replace("@", &String::from_utf8_lossy(frag));
        check_reply(format.parse_reply(body.as_bytes()));
    }
}

pub fn parse_openai(data: &[u8]) {
    parse_with(
        data,
        &OpenAi,
        &[
            r#"{"choices":[{"message":{"content":@},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"message":{"content":"ok"},"finish_reason":@}],"usage":@}"#,
            r#"{"choices":@}"#,
            r#"{"choices":[@]}"#,
            r#"{"choices":[{"message":@}]}"#,
        ],
    );
}

pub fn parse_anthropic(data: &[u8]) {
    parse_with(
        data,
        &Anthropic,
        &[
            r#"{"content":[{"type":"text","text":@}],"stop_reason":"end_turn"}"#,
            r#"{"content":@}"#,
            r#"{"content":[@]}"#,
            r#"{"content":[{"type":@,"text":"x"}],"usage":@,"stop_reason":@}"#,
        ],
    );
}

pub fn parse_webhook(data: &[u8]) {
    parse_with(
        data,
        &Webhook,
        &[
            r#"{"answer":@}"#,
            r#"{"answer":"ok","ttl":@}"#,
            r#"{"answer":"ok","cache":@}"#,
            r#"{"answer":"ok","tokens_in":@,"tokens_out":@}"#,
            r#"@"#,
        ],
    );
}

const GET: Allowed = Allowed {
    ttl: true,
    stale: true,
    refresh: true,
    withmeta: true,
    semantic: true,
    cited: true,
    unknown: "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, REFRESH or WITHMETA)",
};
const SET: Allowed = Allowed {
    ttl: true,
    stale: false,
    refresh: false,
    withmeta: false,
    semantic: true,
    cited: true,
    unknown: "ERR unknown option (expected TTL, MODEL or SYSTEM)",
};

/// Command arguments, NUL-separated after a selector byte: parsing never panics, accepts
/// only valid values and refuses with an `ERR` text.
pub fn args(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let argv: Vec<&[u8]> = rest.split(|b| *b == 0).collect();
    let (positional, allowed) = match sel % 3 {
        0 => (2, GET),
        1 => (3, SET),
        _ => (2, args::LOOKUP_ONLY),
    };
    match args::parse(&argv, positional, allowed) {
        Ok(a) => {
            assert!(validate_cache_name(a.cache).is_ok());
            assert!(a.ttl.is_none_or(|t| (1..=MAX_TTL_SECS).contains(&t)));
            assert!(a.stale.is_none_or(|t| (0..=MAX_TTL_SECS).contains(&t)));
            assert!(a.model.is_none_or(valid_model));
            assert!(a.system.is_none_or(valid_system));
            assert!(allowed.ttl || a.ttl.is_none());
            assert!(allowed.refresh || !a.refresh);
            assert!(allowed.withmeta || !a.withmeta);
            assert!(allowed.cited || a.cited.is_none());
            if let Some(ids) = a.sources() {
                assert!((1..=32).contains(&ids.len()));
                assert!(ids.iter().all(|id| redis_qa::sources::valid_id(id)));
            }
            assert!(a.context().is_none_or(|c| std::str::from_utf8(c).is_ok()));
            if let Ok(q) = args::question_str(a.question, 8192) {
                check_normalized(q, &normalize(q));
            }
        }
        Err(e) => assert!(e.starts_with("ERR "), "{e}"),
    }
}

/// The error-body excerpt: one line, short, and never the secret.
pub fn excerpt(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    // A secret from the API key alphabet, taken from the input (so the fuzzer can plant it
    // in the body too).
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    let n = (n as usize % 48).min(rest.len());
    let secret: String = rest[..n]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let body = &rest[n..];
    let out = body_excerpt(body, &secret);
    assert!(!out.chars().any(char::is_control), "{out:?}");
    assert!(out.len() <= 203, "{} bytes", out.len());
    assert!(!out.starts_with(' ') && !out.ends_with(' ') && !out.contains("  "));
    // A secret that is part of "[redacted]" itself cannot be hidden by that word.
    if secret.len() >= 8 && !"[redacted]".contains(secret.as_str()) {
        assert!(!out.contains(&secret), "{secret:?} in {out:?}");
    }
}

/// Entry format v2 on arbitrary bytes (the value at an entry key may be anything a client
/// wrote): decoding never panics and accepts exactly what encoding writes; the bytes are
/// also read as the parts of an entry that is encoded then decoded back.
pub fn entry_v2(data: &[u8]) {
    if let Some(e) = v2::decode(data) {
        let again = v2::encode_cited(
            &e.meta,
            &v2::unescape(e.model_escaped),
            e.question,
            e.answer,
            e.sem,
            e.sources,
        );
        assert_eq!(again, data, "decode accepted what encode would not write");
    }
    let n = data.len();
    let (a, b, c) = (n / 4, n / 2, 3 * n / 4);
    let meta = v2::Meta {
        created_ms: n as u64,
        ..v2::Meta::default()
    };
    let (model, question, answer, sem) = (&data[..a], &data[a..b], &data[b..c], &data[c..]);
    let encoded = v2::encode(&meta, model, question, answer, sem);
    let e = v2::decode(&encoded).expect("an encoded entry decodes");
    assert_eq!(e.meta, meta);
    assert_eq!(v2::unescape(e.model_escaped), model);
    assert_eq!((e.question, e.answer, e.sem), (question, answer, sem));
}
