//! The keys of recently hit questions: a question asked again with the same bytes, in the
//! same database and cache, with the default model and system prompt, has the same key as
//! long as none of the key's other inputs changed, so a hit on it can skip the mirrored
//! generation's lookup, normalization and hashing (about a quarter of a hit's server time).
//! A pure function's memo: a slot is used only when the cache name, the question as sent
//! and the database match byte for byte and the key derivation's epoch (see
//! `keys::derivation_epoch`: any change of a mirrored generation or of the default model or
//! system prompt moves it) is the one the key was derived under, so it can never give
//! another question's, generation's or model's key. Direct-mapped, a fixed number of slots
//! whose buffers are reused: kept only after a hit (a flood of new questions does not push
//! hot ones out between their hits), on the main thread only.

/// Slots in the table.
pub const SLOTS: usize = 256;

/// Longer questions are not kept (their hashing is not what a short hit pays for; the
/// bound keeps the table small).
pub const MAX_QUESTION: usize = 256;

#[derive(Default)]
struct Slot {
    epoch: u64,
    /// The full hash of (cache, question) the slot was chosen by: compared before any byte.
    tag: u64,
    db: i32,
    cache_len: usize,
    question_len: usize,
    /// The cache name, the question and the entry key, one after the other (one buffer, so
    /// that keeping and comparing touch one allocation); empty: the slot is free.
    bytes: Vec<u8>,
    /// The cache's stats slot (as the mirror had it).
    stats_slot: Option<usize>,
    uses: u32,
}

impl Slot {
    fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        let (cache, rest) = self.bytes.split_at(self.cache_len.min(self.bytes.len()));
        let (question, key) = rest.split_at(self.question_len.min(rest.len()));
        (cache, question, key)
    }
}

/// A kept key, found.
pub struct Found<'a> {
    pub key: &'a [u8],
    pub stats_slot: Option<usize>,
    /// This use is one in `generation::TOUCH_EVERY`: read the generation key, as a mirrored
    /// use would (it keeps the key warm for LRU/LFU eviction).
    pub touch: bool,
}

#[derive(Default)]
pub struct Recent {
    slots: Vec<Slot>,
}

impl Recent {
    pub const fn new() -> Self {
        Recent { slots: Vec::new() }
    }
}

/// What a kept key is valid for besides its cache and question: its place, the derivation
/// epoch and the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Under {
    pub at: Place,
    pub epoch: u64,
    pub db: i32,
}

/// Where (cache, question) is kept: its slot and the hash's full 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub slot: usize,
    pub tag: u64,
}

/// The place of (cache, question): a multiplicative hash of their lengths and of their first
/// and last eight bytes (constant time: a match is compared in full anyway). Not keyed: a
/// collision only makes two questions take turns in one slot.
#[inline]
pub fn place(cache: &[u8], question: &[u8]) -> Place {
    let mut h = (cache.len() as u64) << 32 | question.len() as u64;
    for part in [cache, question] {
        h = mix(h, edge(part, true));
        h = mix(h, edge(part, false));
    }
    Place {
        slot: (h >> 56) as usize % SLOTS,
        tag: h,
    }
}

/// The first (or last) eight bytes of `b` as a word, zero-filled if shorter (one load, not
/// a copy of a variable length).
#[inline(always)]
fn edge(b: &[u8], first: bool) -> u64 {
    let word = if first {
        b.first_chunk::<8>()
    } else {
        b.last_chunk::<8>()
    };
    match word {
        Some(w) => u64::from_le_bytes(*w),
        None => b
            .iter()
            .enumerate()
            .fold(0, |w, (i, &x)| w | u64::from(x) << (8 * i)),
    }
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Recent {
    /// The kept key of (cache, question) in `db`, if its slot holds exactly that under
    /// `epoch`; counts a use.
    pub fn get(&mut self, u: Under, cache: &[u8], question: &[u8]) -> Option<Found<'_>> {
        let s = self.slots.get_mut(u.at.slot)?;
        if s.bytes.is_empty()
            || s.tag != u.at.tag
            || s.epoch != u.epoch
            || s.db != u.db
            || s.cache_len != cache.len()
            || s.question_len != question.len()
        {
            return None;
        }
        let (c, q, key) = s.parts();
        if q != question || c != cache || key.is_empty() {
            return None;
        }
        s.uses = s.uses.wrapping_add(1);
        let (stats_slot, touch) = (s.stats_slot, s.uses % crate::generation::TOUCH_EVERY == 0);
        Some(Found {
            key: s.parts().2,
            stats_slot,
            touch,
        })
    }

    /// Keeps `key` (and the cache's stats slot) for (cache, question) in `db` under `epoch`
    /// at its place, replacing what the slot held. Questions longer than [`MAX_QUESTION`]
    /// are not kept.
    pub fn put(
        &mut self,
        u: Under,
        cache: &[u8],
        question: &[u8],
        key: &[u8],
        stats_slot: Option<usize>,
    ) {
        if u.at.slot >= SLOTS || question.len() > MAX_QUESTION || key.is_empty() {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, Slot::default);
        }
        let s = &mut self.slots[u.at.slot];
        s.epoch = u.epoch;
        s.tag = u.at.tag;
        s.db = u.db;
        s.stats_slot = stats_slot;
        s.uses = 0;
        s.cache_len = cache.len();
        s.question_len = question.len();
        s.bytes.clear();
        for part in [cache, question, key] {
            s.bytes.extend_from_slice(part);
        }
    }

    /// Forgets everything (`FLUSHALL` and the like need not call it: the generation in each
    /// slot is compared).
    #[cfg(test)]
    fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn under(at: Place, epoch: u64, db: i32) -> Under {
        Under { at, epoch, db }
    }

    fn key_of(r: &mut Recent, at: Place, e: u64, db: i32, c: &[u8], q: &[u8]) -> Option<Vec<u8>> {
        r.get(under(at, e, db), c, q).map(|f| f.key.to_vec())
    }

    #[test]
    fn a_slot_serves_only_the_exact_inputs_it_was_kept_for() {
        let mut r = Recent::default();
        let (c, q) = (&b"faq"[..], &b"What is our refund policy?"[..]);
        let i = place(c, q);
        assert_eq!(key_of(&mut r, i, 0, 0, c, q), None, "empty table");
        r.put(under(i, 7, 0), c, q, b"qa:{faq}:k", Some(3));
        let f = r.get(under(i, 7, 0), c, q).unwrap();
        assert_eq!((f.key, f.stats_slot), (&b"qa:{faq}:k"[..], Some(3)));
        // Each row differs in one input: never the kept key.
        // (epoch, db, cache, question)
        type Row<'a> = (u64, i32, &'a [u8], &'a [u8]);
        let rows: &[Row<'_>] = &[
            (8, 0, c, q),                               // a generation or the default prefix moved
            (6, 0, c, q),                               // an older epoch
            (7, 1, c, q),                               // another database
            (7, 0, b"faq2", q),                         // another cache
            (7, 0, c, b"What is our refund policy"),    // another question (a prefix)
            (7, 0, c, b"What is our refund policy?\0"), // one byte more
            (7, 0, c, b"what is our refund policy?"),   // same after normalization: not kept
        ];
        for &(epoch, db, c2, q2) in rows {
            assert_eq!(
                key_of(&mut r, i, epoch, db, c2, q2),
                None,
                "{epoch} {db} {c2:?} {q2:?}"
            );
        }
        // Another place (slot or tag) is never the kept one.
        let other_slot = Place {
            slot: (i.slot + 1) % SLOTS,
            ..i
        };
        assert_eq!(key_of(&mut r, other_slot, 7, 0, c, q), None);
        let other_tag = Place {
            tag: i.tag ^ 1,
            ..i
        };
        assert_eq!(key_of(&mut r, other_tag, 7, 0, c, q), None);
        // Replaced by the next put in its slot.
        r.put(under(i, 7, 0), c, b"other", b"qa:{faq}:o", None);
        assert_eq!(key_of(&mut r, i, 7, 0, c, q), None);
        r.clear();
        assert_eq!(key_of(&mut r, i, 7, 0, c, b"other"), None);
    }

    #[test]
    fn one_use_in_touch_every_reads_the_generation_key() {
        let mut r = Recent::default();
        let i = place(b"c", b"q");
        r.put(under(i, 0, 0), b"c", b"q", b"k", None);
        let every = crate::generation::TOUCH_EVERY as usize;
        let touches = (0..every * 3)
            .filter(|_| r.get(under(i, 0, 0), b"c", b"q").unwrap().touch)
            .count();
        assert_eq!(touches, 3);
    }

    #[test]
    fn long_questions_and_out_of_range_slots_are_not_kept() {
        let mut r = Recent::default();
        let long = vec![b'x'; MAX_QUESTION + 1];
        let i = place(b"c", &long);
        r.put(under(i, 0, 0), b"c", &long, b"k", None);
        assert_eq!(key_of(&mut r, i, 0, 0, b"c", &long), None);
        let out = Place {
            slot: SLOTS,
            ..place(b"c", b"q")
        };
        r.put(under(out, 0, 0), b"c", b"q", b"k", None);
        assert_eq!(key_of(&mut r, out, 0, 0, b"c", b"q"), None);
    }

    #[test]
    fn indexes_are_in_range_and_spread() {
        let mut seen = [0u32; SLOTS];
        for n in 0..(SLOTS * 64) {
            let q = format!("question number {n}?");
            let i = place(b"faq", q.as_bytes()).slot;
            assert!(i < SLOTS);
            seen[i] += 1;
        }
        // 64 per slot on average: no slot empty, none taking more than four times its share.
        assert!(seen.iter().all(|&n| n > 0 && n < 256), "{seen:?}");
        // Hostile lengths and bytes never panic.
        for len in 0..40 {
            let b = vec![0xffu8; len];
            assert!(place(&b, &b).slot < SLOTS);
        }
    }
}
