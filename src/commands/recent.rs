//! The keys of recently hit questions: a question asked again with the same bytes, in the
//! same cache, under the same generation and the default model and system prompt, has the
//! same key, so a hit on it can skip normalization and hashing (about a sixth of a hit's
//! server time). A pure function's memo: a slot is used only when every input of the key's
//! derivation matches byte for byte (the cache name, the question as sent, the generation
//! token and the epoch of the default prefix, see `config::Strings::prefix_epoch`), so it can
//! never give another question's key. Direct-mapped, a fixed number of slots whose buffers
//! are reused: kept only after a hit (a flood of new questions does not push hot ones out
//! between their hits), on the main thread only.

/// Slots in the table.
pub const SLOTS: usize = 256;

/// Longer questions are not kept (their hashing is not what a short hit pays for; the
/// bound keeps the table small).
pub const MAX_QUESTION: usize = 256;

#[derive(Default)]
struct Slot {
    epoch: u64,
    generation: Vec<u8>,
    cache: Vec<u8>,
    question: Vec<u8>,
    /// The entry key; empty: the slot is free.
    key: Vec<u8>,
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

/// The slot of (cache, question): a multiplicative hash of their lengths and of their first
/// and last eight bytes (constant time: the question is compared in full anyway). Not keyed:
/// a collision only makes two questions take turns in one slot.
#[inline]
pub fn index(cache: &[u8], question: &[u8]) -> usize {
    let mut h = (cache.len() as u64) << 32 | question.len() as u64;
    for part in [cache, question] {
        h = mix(h, edge(part, true));
        h = mix(h, edge(part, false));
    }
    (h >> 56) as usize % SLOTS
}

/// The first (or last) eight bytes of `b` as a word, zero-filled if shorter.
#[inline(always)]
fn edge(b: &[u8], first: bool) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    if first {
        w[..n].copy_from_slice(&b[..n]);
    } else {
        w[..n].copy_from_slice(&b[b.len() - n..]);
    }
    u64::from_le_bytes(w)
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Recent {
    /// The kept key of (cache, question) under `generation` and `epoch`, if slot `i` holds
    /// exactly that.
    pub fn get(
        &self,
        i: usize,
        epoch: u64,
        generation: &[u8],
        cache: &[u8],
        question: &[u8],
    ) -> Option<&[u8]> {
        let s = self.slots.get(i)?;
        (!s.key.is_empty()
            && s.epoch == epoch
            && s.question == question
            && s.cache == cache
            && s.generation == generation)
            .then_some(&s.key[..])
    }

    /// Keeps `key` for (cache, question) under `generation` and `epoch` in slot `i`,
    /// replacing what it held. Questions longer than [`MAX_QUESTION`] are not kept.
    pub fn put(
        &mut self,
        i: usize,
        epoch: u64,
        generation: &[u8],
        cache: &[u8],
        question: &[u8],
        key: &[u8],
    ) {
        if i >= SLOTS || question.len() > MAX_QUESTION || key.is_empty() {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, Slot::default);
        }
        let s = &mut self.slots[i];
        s.epoch = epoch;
        for (buf, from) in [
            (&mut s.generation, generation),
            (&mut s.cache, cache),
            (&mut s.question, question),
            (&mut s.key, key),
        ] {
            buf.clear();
            buf.extend_from_slice(from);
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

    #[test]
    fn a_slot_serves_only_the_exact_inputs_it_was_kept_for() {
        let mut r = Recent::default();
        let (c, q, g) = (&b"faq"[..], &b"What is our refund policy?"[..], &b"g1"[..]);
        let i = index(c, q);
        assert_eq!(r.get(i, 0, g, c, q), None, "empty table");
        r.put(i, 0, g, c, q, b"qa:{faq}:k");
        assert_eq!(r.get(i, 0, g, c, q), Some(&b"qa:{faq}:k"[..]));
        // Each row differs in one input: never the kept key.
        // (epoch, generation, cache, question)
        type Row<'a> = (u64, &'a [u8], &'a [u8], &'a [u8]);
        let rows: &[Row<'_>] = &[
            (1, g, c, q),                               // default model or prompt changed
            (0, b"g2", c, q),                           // invalidated
            (0, g, b"faq2", q),                         // another cache
            (0, g, c, b"What is our refund policy"),    // another question (a prefix)
            (0, g, c, b"What is our refund policy?\0"), // one byte more
            (0, g, c, b"what is our refund policy?"),   // same after normalization: not kept
        ];
        for &(epoch, g2, c2, q2) in rows {
            assert_eq!(
                r.get(i, epoch, g2, c2, q2),
                None,
                "{epoch} {g2:?} {c2:?} {q2:?}"
            );
        }
        // Another slot index is never the kept one.
        assert_eq!(r.get((i + 1) % SLOTS, 0, g, c, q), None);
        // Replaced by the next put in its slot.
        r.put(i, 0, g, c, b"other", b"qa:{faq}:o");
        assert_eq!(r.get(i, 0, g, c, q), None);
        r.clear();
        assert_eq!(r.get(i, 0, g, c, b"other"), None);
    }

    #[test]
    fn long_questions_and_out_of_range_slots_are_not_kept() {
        let mut r = Recent::default();
        let long = vec![b'x'; MAX_QUESTION + 1];
        let i = index(b"c", &long);
        r.put(i, 0, b"g", b"c", &long, b"k");
        assert_eq!(r.get(i, 0, b"g", b"c", &long), None);
        r.put(SLOTS, 0, b"g", b"c", b"q", b"k");
        assert_eq!(r.get(SLOTS, 0, b"g", b"c", b"q"), None);
    }

    #[test]
    fn indexes_are_in_range_and_spread() {
        let mut seen = [0u32; SLOTS];
        for n in 0..(SLOTS * 64) {
            let q = format!("question number {n}?");
            let i = index(b"faq", q.as_bytes());
            assert!(i < SLOTS);
            seen[i] += 1;
        }
        // 64 per slot on average: no slot empty, none taking more than four times its share.
        assert!(seen.iter().all(|&n| n > 0 && n < 256), "{seen:?}");
        // Hostile lengths and bytes never panic.
        for len in 0..40 {
            let b = vec![0xffu8; len];
            assert!(index(&b, &b) < SLOTS);
        }
    }
}
