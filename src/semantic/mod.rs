//! The semantic tier: serving a stored answer for a question that means the same as the one
//! it was stored for. See `docs/semantic.md`.
//!
//! An entry made with the semantic tier on carries its question's embedding in the field
//! `sem` (see [`encode`]); the in-memory [`index`] mirrors those fields and is kept in step by
//! [`upkeep`]. A match must clear `qa.semantic-threshold` and every [`guard`], and is checked
//! against the entry itself before it is served (see `worker`).

pub mod audit;
pub mod calibrate;
mod gate;
pub mod guard;
pub mod index;
pub mod persist;
pub mod upkeep;
pub mod verify;

use sha2::{Digest, Sha256};

use crate::normalize::NORMALIZATION_VERSION;

/// A guard's counter (`stats::GUARD_REFUSED`) is its position in [`guard::ALL`].
impl crate::stats::CounterIndex for guard::Refusal {
    fn counter_index(&self) -> usize {
        guard::ALL
            .iter()
            .position(|r| r == self)
            .unwrap_or(usize::MAX)
    }
}

/// Builds the guards' word lists at load time, so no request pays for it.
pub fn init() {
    upkeep::start_thread();
    let _ = guard::check("warm up", "warm up the word lists");
}

/// The hash field holding an entry's embedding.
pub const FIELD: &[u8] = b"sem";

/// Identifies what an entry's answer depends on besides its question: the normalization
/// version, model, system prompt and the cache's generation. Only entries of the same scope
/// are ever compared.
pub fn scope_digest(model: &str, system: &str, generation: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    for field in [
        NORMALIZATION_VERSION.as_bytes(),
        model.as_bytes(),
        system.as_bytes(),
        generation,
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// `sem` fields written before f16 (still read: entries live until their TTL, and RDB and
/// AOF files outlive a module upgrade).
const MAGIC_F32: &[u8; 4] = b"qav1";
/// `sem` fields as written now: the vector as f16, half the bytes. The graph stores f16
/// anyway, and the similarity between f16-rounded unit vectors differs from the float32
/// one by less than 0.0001 (docs/semantic.md, "Choosing the ANN library"), so a threshold
/// means the same.
const MAGIC_F16: &[u8; 4] = b"qav2";

/// The `sem` field: `qav2`, the 16-byte scope digest, the dimension count (u16 LE), then the
/// unit vector as IEEE f16 LE (`qav1`: as f32 LE, read only).
pub fn encode(scope: &[u8; 16], v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(22 + v.len() * 2);
    out.extend_from_slice(MAGIC_F16);
    out.extend_from_slice(scope);
    out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    for x in v {
        out.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_le_bytes());
    }
    out
}

/// Reads a `sem` field (`qav2` or `qav1`): the scope digest and the unit vector. `None` for
/// anything else (a field written by hand, truncated, of another version, not finite, not
/// unit length).
pub fn decode(b: &[u8]) -> Option<([u8; 16], Vec<f32>)> {
    let (width, rest) = match b.get(..4)? {
        m if m == MAGIC_F16 => (2, &b[4..]),
        m if m == MAGIC_F32 => (4, &b[4..]),
        _ => return None,
    };
    let scope: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let dims = u16::from_le_bytes(rest.get(16..18)?.try_into().ok()?) as usize;
    let body = rest.get(18..)?;
    if dims == 0 || body.len() != dims * width {
        return None;
    }
    let v: Vec<f32> = if width == 2 {
        body.chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    // Renormalised: a hand-made field cannot skew similarities past 1.
    let u = index::unit(&v)?;
    Some((scope, u))
}

/// Only the scope digest of a `sem` field (cheap: for checking a match before serving it).
pub fn scope_of(b: &[u8]) -> Option<[u8; 16]> {
    let rest = b
        .strip_prefix(MAGIC_F16)
        .or_else(|| b.strip_prefix(MAGIC_F32))?;
    rest.get(..16)?.try_into().ok()
}

/// The cache of an entry key `qa:{<cache>}:<32 hex>` (not a generation key); keys of
/// older builds (64 hex digits, see `keys`) too, so that old entries are still indexed.
pub fn cache_of_entry(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(b"qa:{")?;
    let close = rest.iter().position(|b| *b == b'}')?;
    let (cache, tail) = rest.split_at(close);
    let hex = tail.strip_prefix(b"}:")?;
    ((hex.len() == crate::keys::DIGEST_HEX || hex.len() == 64)
        && hex.iter().all(u8::is_ascii_hexdigit))
    .then_some(cache)
}

/// A similarity threshold from `qa.semantic-threshold`: a decimal in [0, 1].
pub fn parse_threshold(v: &str) -> Option<f32> {
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    v.parse::<f32>()
        .ok()
        .filter(|t| ok && t.is_finite() && (0.0..=1.0).contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guard_has_its_own_counter() {
        use crate::stats::{CounterIndex, GUARD_REFUSED};
        assert!(guard::ALL.len() <= GUARD_REFUSED.len());
        for (i, r) in guard::ALL.iter().enumerate() {
            assert_eq!(r.counter_index(), i, "{r:?}");
        }
    }

    #[test]
    fn fields_round_trip_and_hostile_bytes_are_refused() {
        let scope = scope_digest("gpt-4o-mini", "", b"");
        let v = index::unit(&[0.5, -0.25, 1.0]).unwrap();
        let b = encode(&scope, &v);
        let (s, back) = decode(&b).unwrap();
        assert_eq!(s, scope);
        assert_eq!(scope_of(&b), Some(scope));
        // f16: each value within 2^-11 of the original (relative), renormalised.
        assert_eq!(b.len(), 4 + 16 + 2 + 3 * 2);
        for (a, b) in back.iter().zip(&v) {
            assert!((a - b).abs() < 1e-3, "{a} {b}");
        }
        // A field written as float32 before (`qav1`) is still read, exactly.
        let mut old = [&b"qav1"[..], &scope, &3u16.to_le_bytes()].concat();
        for x in &v {
            old.extend_from_slice(&x.to_le_bytes());
        }
        let (s, back) = decode(&old).unwrap();
        assert_eq!(s, scope);
        assert_eq!(scope_of(&old), Some(scope));
        for (a, b) in back.iter().zip(&v) {
            assert!((a - b).abs() < 1e-6);
        }
        // Truncated, padded, wrong magic, zero dims, NaN, zero vector, an f16 body under the
        // f32 magic.
        let mut bad = vec![
            b[..b.len() - 1].to_vec(),
            [&b[..], &[0]].concat(),
            [b"qav9", &b[4..]].concat(),
            [b"qav1", &b[4..]].concat(),
            old[..old.len() - 2].to_vec(),
            encode(&scope, &[]),
            encode(&scope, &[f32::NAN, 1.0]),
            encode(&scope, &[0.0, 0.0]),
            Vec::new(),
            b"qav1".to_vec(),
            b"qav2".to_vec(),
        ];
        // Every prefix of a valid field.
        bad.extend((0..b.len()).map(|n| b[..n].to_vec()));
        for x in bad {
            assert!(decode(&x).is_none(), "{x:?}");
        }
    }

    #[test]
    fn scopes_differ_by_model_system_and_generation() {
        let base = scope_digest("m", "s", b"");
        assert_ne!(base, scope_digest("m2", "s", b""));
        assert_ne!(base, scope_digest("m", "s2", b""));
        assert_ne!(base, scope_digest("m", "s", b"1"));
        // Length prefixes: moving a byte between fields changes the digest.
        assert_ne!(scope_digest("ms", "", b""), scope_digest("m", "s", b""));
        assert_eq!(base, scope_digest("m", "s", b""));
    }

    #[test]
    fn entry_keys() {
        let hex = "0".repeat(32);
        let k = format!("qa:{{faq}}:{hex}");
        assert_eq!(cache_of_entry(k.as_bytes()), Some(&b"faq"[..]));
        assert_eq!(cache_of_entry(b"qa:{faq}:gen"), None);
        assert_eq!(
            cache_of_entry(format!("qa:{{faq}}:{hex}0").as_bytes()),
            None
        );
        // Keys of older builds (64 digits) too.
        let v1 = format!("qa:{{faq}}:{hex}{hex}");
        assert_eq!(cache_of_entry(v1.as_bytes()), Some(&b"faq"[..]));
        assert_eq!(
            cache_of_entry(format!("qa:{{faq}}:{hex}x").as_bytes()),
            None
        );
        assert_eq!(cache_of_entry(format!("qa:{{faq:{hex}").as_bytes()), None);
        assert_eq!(cache_of_entry(b"faq"), None);
    }

    #[test]
    fn thresholds() {
        // (value, parsed)
        let rows = [
            ("0.9", Some(0.9)),
            ("0", Some(0.0)),
            ("1", Some(1.0)),
            ("1.5", None),
            ("-0.1", None),
            ("", None),
            ("nan", None),
            ("0.9x", None),
        ];
        for (v, want) in rows {
            assert_eq!(parse_threshold(v), want, "{v}");
        }
    }
}
