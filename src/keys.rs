//! Key derivation: which Redis key holds the answer to a question.
//!
//! `qa:{<cache>}:<32 hex digits>`: the first 128 bits of a SHA-256. The hash tag keeps all
//! of a cache's entries in the cluster slot of the cache name (the command's declared key).
//! The digest covers, each length-prefixed so no two field lists encode alike: the key
//! layout's version ([`KEY_VERSION`]), the normalization version, the model, the system
//! prompt and the cache's generation (see `generation`), zero-padded to a whole number of
//! 64-byte blocks, then the normalized question (and the app's context, if any). The state
//! up to the padding is computed once per (model, system prompt, generation) and kept with
//! the cache's mirrored generation, so a hit hashes only its question: one block for a
//! question of up to 47 bytes.
//!
//! 128 bits: the chance that any two of n questions of one cache share a key is at most
//! n²/2¹²⁹, about 1.5·10⁻²¹ for a billion of them. Half the digits of the whole digest save
//! 32 bytes per key (a third of a short entry's key allocation). Older builds wrote all 64
//! digits (never looked up again: their keys are longer) or hashed another layout (another
//! first field, so never the same digest input); either way their entries are not found by
//! an exact lookup and expire with their TTL.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::normalize::NORMALIZATION_VERSION;

/// The first field of every key's digest: the layout of the fields after it. `qa-key-v3`:
/// the padding follows the generation (builds before it hashed no such field and padded
/// after the system prompt).
pub const KEY_VERSION: &str = "qa-key-v3";

/// Changes whenever an input of entry keys other than the question may have changed: a
/// mirrored generation added, dropped or replaced (see `generation`), the default model or
/// system prompt set. Keys remembered under another value are not used (see
/// `commands::recent`). Main thread.
static DERIVATION_EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current derivation epoch.
#[inline]
pub fn derivation_epoch() -> u64 {
    DERIVATION_EPOCH.load(Ordering::Relaxed)
}

/// Says that an input of entry keys other than the question may have changed.
pub fn derivation_changed() {
    DERIVATION_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Hex digits of the digest in a key.
pub const DIGEST_HEX: usize = 32;

/// Longest cache name accepted.
pub const MAX_CACHE_NAME: usize = 128;

/// Why a cache name was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheNameError {
    Empty,
    TooLong,
    Brace,
}

pub fn validate_cache_name(name: &[u8]) -> Result<(), CacheNameError> {
    if name.is_empty() {
        Err(CacheNameError::Empty)
    } else if name.len() > MAX_CACHE_NAME {
        Err(CacheNameError::TooLong)
    } else if name.iter().any(|b| *b == b'{' || *b == b'}') {
        Err(CacheNameError::Brace)
    } else {
        Ok(())
    }
}

fn update_field(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field);
}

/// The digest state after the key version, the normalization version, the model and the
/// system prompt (not padded): computed once per (model, system prompt).
#[derive(Clone)]
pub struct Prefix {
    state: Sha256,
    /// Bytes hashed so far.
    len: usize,
}

pub fn prefix_state(model: &str, system: &str) -> Prefix {
    let mut state = Sha256::new();
    let mut len = 0;
    for field in [KEY_VERSION, NORMALIZATION_VERSION, model, system] {
        update_field(&mut state, field.as_bytes());
        len += 8 + field.len();
    }
    Prefix { state, len }
}

/// The digest state of one cache generation under `prefix`: the generation's field, then
/// zero padding to a whole number of 64-byte SHA-256 blocks, so that finishing it with a
/// question clones no partial block and hashes the question alone. The padding is
/// unambiguous: the fields before it are length-prefixed, so where it starts and ends
/// follows from them.
pub fn generation_state(prefix: &Prefix, generation: &[u8]) -> Sha256 {
    let mut h = prefix.state.clone();
    update_field(&mut h, generation);
    let len = prefix.len + 8 + generation.len();
    h.update(&[0u8; 64][..(64 - len % 64) % 64]);
    h
}

/// Length of a full entry key for a cache name of `cache_len` bytes.
pub fn key_len(cache_len: usize) -> usize {
    "qa:{".len() + cache_len + "}:".len() + DIGEST_HEX
}

/// Appends `qa:{<cache>}:<hex>` to `out`, finishing `state` (a [`generation_state`] of the
/// cache) with the normalized question.
pub fn entry_key_into(state: &Sha256, cache: &[u8], normalized: &str, out: &mut Vec<u8>) {
    let mut h = state.clone();
    update_field(&mut h, normalized.as_bytes());
    finish_key(h, cache, out);
}

/// [`entry_key_into`] for a question asked with the app's retrieved `context`: the
/// context's bytes follow the question as one more length-prefixed field, so the same
/// question with another context (or none: one field fewer) is another key.
pub fn entry_key_with_context_into(
    state: &Sha256,
    cache: &[u8],
    normalized: &str,
    context: &[u8],
    out: &mut Vec<u8>,
) {
    let mut h = state.clone();
    update_field(&mut h, normalized.as_bytes());
    update_field(&mut h, context);
    finish_key(h, cache, out);
}

/// Appends `qa:{<cache>}:<hex of the first 128 bits of h>` to `out`. Inlined: the digest
/// state is not moved on the hit path.
#[inline(always)]
fn finish_key(h: Sha256, cache: &[u8], out: &mut Vec<u8>) {
    let digest = h.finalize();
    out.reserve(key_len(cache.len()));
    out.extend_from_slice(b"qa:{");
    out.extend_from_slice(cache);
    out.extend_from_slice(b"}:");
    let mut hex = [0u8; DIGEST_HEX];
    for (pair, b) in hex.chunks_exact_mut(2).zip(digest) {
        pair.copy_from_slice(&HEX_PAIRS[b as usize]);
    }
    out.extend_from_slice(&hex);
}

/// Lowercase hex of every byte value: one table load per digest byte instead of two
/// nibble lookups (this runs on every request).
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// Convenience wrapper for generation "" (cache names may be binary, so bytes).
#[cfg(test)]
fn entry_key(cache: &[u8], model: &str, system: &str, normalized: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let state = generation_state(&prefix_state(model, system), b"");
    entry_key_into(&state, cache, normalized, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cache: &str, model: &str, system: &str, q: &str) -> String {
        String::from_utf8(entry_key(cache.as_bytes(), model, system, q)).unwrap()
    }

    #[test]
    fn shape() {
        let k = key("faq", "m", "", "what is our refund policy");
        assert!(k.starts_with("qa:{faq}:"), "{k}");
        assert_eq!(k.len(), key_len(3));
        assert!(k["qa:{faq}:".len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }

    #[test]
    fn known_vector() {
        // Pinned so an accidental change of the encoding (which would orphan every stored
        // entry) fails here first. Recompute only together with KEY_VERSION or
        // NORMALIZATION_VERSION. Header fields, zero padding to the 64-byte block, then the
        // question.
        let mut h = Sha256::new();
        let mut header = Vec::new();
        for f in ["qa-key-v3", "qa-norm-v2", "gpt-4o-mini", "", "g1"] {
            header.extend_from_slice(&(f.len() as u64).to_be_bytes());
            header.extend_from_slice(f.as_bytes());
        }
        assert!(header.len() <= 128);
        header.resize(128, 0);
        h.update(&header);
        h.update(5u64.to_be_bytes());
        h.update(b"hello");
        let hex: String = h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut k = Vec::new();
        let state = generation_state(&prefix_state("gpt-4o-mini", ""), b"g1");
        entry_key_into(&state, b"c", "hello", &mut k);
        assert_eq!(String::from_utf8(k).unwrap(), format!("qa:{{c}}:{hex}"));
        assert_eq!(hex, "f361d7311290976777a50cc5380e7428", "pinned");
    }

    /// Each row differs from the base in one field; every one must give another key.
    #[test]
    fn every_field_matters() {
        let base = key("faq", "gpt-4o", "be brief", "q");
        let rows = [
            ("faq2", "gpt-4o", "be brief", "q"),     // other cache
            ("faq", "gpt-4o-mini", "be brief", "q"), // other model
            ("faq", "gpt-4o", "be verbose", "q"),    // other system prompt
            ("faq", "gpt-4o", "", "q"),              // no system prompt
            ("faq", "gpt-4o", "be brief", "q2"),     // other question
        ];
        for (c, m, s, q) in rows {
            assert_ne!(key(c, m, s, q), base, "{c} {m} {s} {q}");
        }
    }

    #[test]
    fn length_prefix_prevents_field_shifting() {
        // Without length prefixes these two would hash the same concatenation.
        assert_ne!(key("c", "ab", "c", "q"), key("c", "a", "bc", "q"));
        assert_ne!(key("c", "m", "s", "q"), key("c", "m", "", "sq"));
    }

    #[test]
    fn padding_does_not_merge_fields() {
        let with_gen = |system: &str, generation: &[u8], q: &str| {
            let mut k = Vec::new();
            let state = generation_state(&prefix_state("m", system), generation);
            entry_key_into(&state, b"c", q, &mut k);
            k
        };
        // A generation of NULs must not collide with the padding after a shorter one.
        assert_ne!(with_gen("", b"", "q"), with_gen("", b"\0", "q"));
        assert_ne!(with_gen("", b"", "q"), with_gen("", &[0; 8], "q"));
        assert_ne!(key("c", "m", "", "q"), key("c", "m", "\0", "q"));
        // A header of exactly one block gets no padding, and still differs from its neighbours.
        let fixed = 5 * 8 + KEY_VERSION.len() + NORMALIZATION_VERSION.len() + 1;
        let exact = "s".repeat(64 - fixed);
        assert_eq!((fixed + exact.len()) % 64, 0);
        assert_ne!(
            key("c", "m", &exact, "q"),
            key("c", "m", &format!("{exact}s"), "q")
        );
        assert_ne!(key("c", "m", &exact, "q"), key("c", "m", &exact[1..], "q"));
    }

    #[test]
    fn generation_state_is_reusable() {
        let p = prefix_state("m", "s");
        let state = generation_state(&p, b"");
        let mut a = Vec::new();
        let mut b = Vec::new();
        entry_key_into(&state, b"c", "one", &mut a);
        entry_key_into(&state, b"c", "one", &mut b);
        assert_eq!(a, b);
        assert_eq!(a, entry_key(b"c", "m", "s", "one"));
        // Another generation is another key; the prefix is reusable too.
        let mut g = Vec::new();
        entry_key_into(&generation_state(&p, b"1"), b"c", "one", &mut g);
        assert_ne!(a, g);
        let mut again = Vec::new();
        entry_key_into(&generation_state(&p, b""), b"c", "one", &mut again);
        assert_eq!(a, again);
    }

    #[test]
    fn context_is_part_of_the_key() {
        let state = generation_state(&prefix_state("m", "s"), b"g");
        let with = |ctx: &[u8]| {
            let mut k = Vec::new();
            entry_key_with_context_into(&state, b"c", "q", ctx, &mut k);
            k
        };
        let mut plain = Vec::new();
        entry_key_into(&state, b"c", "q", &mut plain);
        // (context A, context B): each pair must give two keys.
        let rows: &[(&[u8], &[u8])] = &[
            (b"doc one", b"doc two"),
            (b"doc", b"doc "), // not normalized: bytes as sent
            (b"", b"x"),
        ];
        for (a, b) in rows {
            assert_ne!(with(a), with(b));
        }
        // With a context, even an empty one, is not without; the same context, the same key.
        assert_ne!(with(b""), plain);
        assert_eq!(with(b"doc"), with(b"doc"));
        assert_eq!(with(b"doc").len(), plain.len());
    }

    #[test]
    fn cache_names() {
        // (name, expected verdict)
        let rows: &[(&[u8], Result<(), CacheNameError>)] = &[
            (b"faq", Ok(())),
            (b"support:acme", Ok(())),
            (b"\xff\x00binary", Ok(())), // keys are binary-safe in Redis
            (b"", Err(CacheNameError::Empty)),
            (b"a{b", Err(CacheNameError::Brace)),
            (b"a}b", Err(CacheNameError::Brace)),
            (&[b'x'; 128], Ok(())),
            (&[b'x'; 129], Err(CacheNameError::TooLong)),
        ];
        for (name, want) in rows {
            assert_eq!(&validate_cache_name(name), want, "{name:?}");
        }
    }
}
