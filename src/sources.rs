//! Sources: the documents an answer cites, and the per-source index that lets
//! `QA.INVALIDATE <cache> SOURCE <id>` find every entry citing one (docs/sources.md).
//!
//! An entry lists its sources in its own value (the `r` part of format v2). Each source of a
//! cache has a native Redis set, `qa:{<cache>}:src:<32 hex digits>`, of the entries citing it
//! (each member is the 32 hex digits that end the entry's key). The digest covers the cache's
//! generation and the id, so after a whole-cache `QA.INVALIDATE` the old sets are never
//! read again and expire on their own. The hash tag keeps a set in its cache's cluster slot.
//!
//! The sets are written only where an entry with sources is written (`entry::write`), and
//! read only by `QA.INVALIDATE ... SOURCE` and `QA.SOURCES`: a hit never reads them, and a
//! cache that never uses sources has none. Keyspace events come after a key is gone (Redis
//! 7.0 gives a module no way to read an expired, evicted or deleted value), so a set cannot
//! learn which of its members died: instead
//! - a set expires with the longest-lived entry ever added to it (`PEXPIREAT ... GT`), so
//!   when every cited entry has expired the whole bookkeeping is gone;
//! - every addition samples [`PRUNE_SAMPLE`] members and removes those whose entry is gone,
//!   which keeps the dead members of a long-lived set below about the live ones;
//! - an entry rewritten with other sources leaves the sets of the sources it no longer cites.
//!
//! The readers check each member: `QA.SOURCES` counts only entries that exist and still cite
//! the id, and `QA.INVALIDATE ... SOURCE` counts the entries its `UNLINK` removed.

use sha2::{Digest, Sha256};

/// Most sources one entry may cite.
pub const MAX_SOURCES: usize = 32;
/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Members checked (and removed if their entry is gone) per addition to a set.
pub const PRUNE_SAMPLE: usize = 2;
/// Hex digits of the digest in a set's key (and of an entry key's digest: a member).
const DIGEST_HEX: usize = 32;

/// Whether `id` can be a document id: 1 to [`MAX_ID_BYTES`] bytes of UTF-8 without control
/// characters (so `\n` can separate ids in an entry).
pub fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && std::str::from_utf8(id).is_ok_and(|s| !s.chars().any(char::is_control))
}

/// Joins ids into an entry's sources part, dropping repeats (first kept). `None` if an id is
/// not valid or there are more than [`MAX_SOURCES`] distinct ones.
pub fn encode<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut seen: Vec<&[u8]> = Vec::new();
    for id in ids {
        if !valid_id(id) {
            return None;
        }
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    if seen.len() > MAX_SOURCES {
        return None;
    }
    Some(seen.join(&b'\n'))
}

/// The ids of a sources part (none for an empty one).
pub fn ids(part: &[u8]) -> impl Iterator<Item = &[u8]> {
    part.split(|b| *b == b'\n').filter(|id| !id.is_empty())
}

/// Whether a sources part lists `id`.
pub fn cites(part: &[u8], id: &[u8]) -> bool {
    ids(part).any(|x| x == id)
}

/// How long an invalidation by source is remembered (ms): longer than any backend call can
/// be in flight (`qa.timeout-ms` at most 600 s, plus a write waiting out a pause, 60 s).
pub const TOMBSTONE_MS: i64 = 700_000;

/// The key of the set of entries of `cache` (under `generation`) citing `id`.
pub fn set_key(cache: &[u8], generation: &[u8], id: &[u8]) -> Vec<u8> {
    source_key(cache, generation, id, b"}:src:")
}

/// The key remembering when (Unix µs) `id` was last invalidated in `cache` (under
/// `generation`), for [`TOMBSTONE_MS`]: an answer asked for before then, built from the old document, is not
/// stored when it arrives after it.
pub fn tombstone_key(cache: &[u8], generation: &[u8], id: &[u8]) -> Vec<u8> {
    source_key(cache, generation, id, b"}:inv:")
}

fn source_key(cache: &[u8], generation: &[u8], id: &[u8], kind: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    for field in [generation, id] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    let digest = h.finalize();
    let mut k = Vec::with_capacity(cache.len() + 9 + DIGEST_HEX);
    k.extend_from_slice(b"qa:{");
    k.extend_from_slice(cache);
    k.extend_from_slice(kind);
    for b in &digest[..DIGEST_HEX / 2] {
        k.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    k
}

/// The cache name in a per-source set's key, if `key` is one.
pub fn cache_of_set_key(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(b"qa:{")?;
    let close = rest.iter().position(|b| *b == b'}')?;
    let (cache, tail) = rest.split_at(close);
    let digest = tail.strip_prefix(b"}:src:")?;
    (digest.len() == DIGEST_HEX && digest.iter().all(u8::is_ascii_hexdigit)).then_some(cache)
}

/// The cache name and the member (digest) of an entry key `qa:{<cache>}:<digest>`.
pub fn split_entry_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = key.strip_prefix(b"qa:{")?;
    let close = rest.iter().position(|b| *b == b'}')?;
    let (cache, tail) = rest.split_at(close);
    let member = tail.strip_prefix(b"}:")?;
    (member.len() == DIGEST_HEX && member.iter().all(u8::is_ascii_hexdigit))
        .then_some((cache, member))
}

/// The entry key of `member` in `cache`.
pub fn entry_key(cache: &[u8], member: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(cache.len() + 6 + member.len());
    k.extend_from_slice(b"qa:{");
    k.extend_from_slice(cache);
    k.extend_from_slice(b"}:");
    k.extend_from_slice(member);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        // (id, valid)
        let rows: &[(&[u8], bool)] = &[
            (b"refunds.md", true),
            (b"docs/policy v2.md#refunds", true),
            ("r\u{e9}sum\u{e9}.md".as_bytes(), true),
            (b"", false),
            (b"a\nb", false),     // the separator
            (b"a\tb", false),     // any control character
            (b"a\x7fb", false),   // DEL
            (b"\xff\xfe", false), // not UTF-8
            (&[b'x'; 256], true),
            (&[b'x'; 257], false),
        ];
        for (id, want) in rows {
            assert_eq!(valid_id(id), *want, "{:?}", String::from_utf8_lossy(id));
        }
    }

    #[test]
    fn encoding() {
        let e = encode([&b"a.md"[..], b"b.md", b"a.md"]).unwrap();
        assert_eq!(e, b"a.md\nb.md");
        assert_eq!(ids(&e).collect::<Vec<_>>(), [&b"a.md"[..], b"b.md"]);
        assert!(cites(&e, b"b.md") && !cites(&e, b"c.md") && !cites(&e, b"a"));
        assert_eq!(encode([]).unwrap(), b"");
        assert_eq!(ids(b"").count(), 0);
        assert_eq!(encode([&b"a\nb"[..]]), None);
        let many: Vec<Vec<u8>> = (0..=MAX_SOURCES).map(|i| format!("d{i}").into()).collect();
        assert_eq!(encode(many.iter().map(|v| &v[..])), None);
        assert!(encode(many[..MAX_SOURCES].iter().map(|v| &v[..])).is_some());
    }

    #[test]
    fn keys() {
        let k = set_key(b"faq", b"gen1", b"refunds.md");
        let s = String::from_utf8(k.clone()).unwrap();
        assert!(s.starts_with("qa:{faq}:src:") && s.len() == "qa:{faq}:src:".len() + 32);
        // (cache, generation, id) each change the key; no shifting between fields.
        assert_ne!(k, set_key(b"faq", b"gen2", b"refunds.md"));
        assert_ne!(k, set_key(b"faq", b"gen1", b"other.md"));
        assert_ne!(set_key(b"c", b"ab", b"c"), set_key(b"c", b"a", b"bc"));
        let t = tombstone_key(b"faq", b"gen1", b"refunds.md");
        assert_eq!(&t[..13], b"qa:{faq}:inv:");
        assert_eq!(t[13..], k[13..]);
        assert_eq!(split_entry_key(&t), None);
        assert_eq!(cache_of_set_key(&t), None);
        // A set key is never taken for an entry key, and the other way round.
        assert_eq!(split_entry_key(&k), None);
        assert_eq!(cache_of_set_key(&k), Some(&b"faq"[..]));
        assert_eq!(cache_of_set_key(b"qa:{faq}:gen"), None);
        assert_eq!(
            cache_of_set_key(b"qa:{faq}:0123456789abcdef0123456789abcdef"),
            None
        );
        let e = b"qa:{faq}:0123456789abcdef0123456789abcdef";
        assert_eq!(
            split_entry_key(e),
            Some((&b"faq"[..], &b"0123456789abcdef0123456789abcdef"[..]))
        );
        assert_eq!(entry_key(b"faq", &e[9..]), e);
        // (key, valid entry key)
        for bad in [
            &b"qa:{faq}:gen"[..],
            b"qa:{faq}:0123456789abcdef0123456789abcdef00",
            b"faq",
            b"qa:{faq",
        ] {
            assert_eq!(split_entry_key(bad), None);
        }
    }
}
