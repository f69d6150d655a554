//! Question normalization: the rules that decide which questions share an answer.
//!
//! Pure and allocation-light; it never sees a Redis context. The rules are versioned
//! ([`NORMALIZATION_VERSION`]) and the version is part of every key, so changing a rule
//! can never make an old entry answer a question it was not asked for.

use std::sync::LazyLock;

use icu_normalizer::properties::CanonicalCombiningClassMapBorrowed;
use icu_normalizer::ComposingNormalizerBorrowed;

/// Bumped whenever a rule below changes; part of the key derivation.
pub const NORMALIZATION_VERSION: &str = "qa-norm-v2";

/// Punctuation that ends a sentence or clause. After NFKC the full-width forms
/// (`？！．，；：`) are already their ASCII selves; the ideographic full stop and comma
/// have no compatibility mapping, so they are listed too.
fn is_sentence_punct(c: char) -> bool {
    matches!(
        c,
        '?' | '!' | '.' | ',' | ';' | ':' | '\u{3002}' | '\u{3001}'
    )
}

/// Characters that carry nothing a reader sees: zero-width space and the byte order mark.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{FEFF}')
}

fn fold_quote(c: char) -> char {
    match c {
        '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' => '\'',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' => '"',
        other => other,
    }
}

/// Normalizes a question into `out` (cleared first).
///
/// Rules, in order: zero-width spaces and BOMs dropped; Unicode NFKC; lowercase; curly
/// quotes to straight ones; then the text is split on Unicode whitespace, sentence
/// punctuation (`? ! . , ; :`, `。`, `、`) is stripped from the end of every word, empty
/// words are dropped and the rest are joined with one ASCII space. So punctuation
/// survives inside a word (`c++`, `3.14`, `e.g`), and goes at the end of the text and
/// before whitespace.
pub fn normalize_into(question: &str, out: &mut String) {
    if let Err(resume) = normalize_ascii(question.as_bytes(), out) {
        // `out` holds the words of `question[..resume]`, which ends with ASCII whitespace (or
        // is empty): NFKC changes nothing across that boundary (no composition starts with a
        // space, and marks never move before a starter), so only the rest takes the general
        // path, appending its words.
        match question.get(resume..) {
            Some(rest) => push_unicode(rest, out),
            None => normalize_unicode(question, out),
        }
    }
}

/// The general path, for any text. NFKC is ICU4X's, which checks first how much of the text
/// is already normalized (most questions: composed accents, CJK) and copies nothing then.
fn normalize_unicode(question: &str, out: &mut String) {
    out.clear();
    push_unicode(question, out);
}

/// Appends the words of `question` by the general path to `out` (words already there are
/// complete).
fn push_unicode(question: &str, out: &mut String) {
    // Most non-ASCII questions (accented Latin, Greek, Cyrillic, Hebrew, Arabic letters) are
    // NFKC as they are: no ICU call then.
    if nfkc_stable(question) {
        push_lowercase_words(question, out);
        return;
    }
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    // Invisible characters go first, so they cannot keep NFKC from composing what surrounds
    // them (`e` ZWSP U+0301 is `é`, as it looks).
    if has_invisible(question) {
        let visible: String = question.chars().filter(|c| !is_invisible(*c)).collect();
        push_lowercase_words(&nfkc.normalize(&visible), out);
    } else {
        push_lowercase_words(&nfkc.normalize(question), out);
    }
}

/// The two-byte characters (U+0080..U+07FF) that NFKC leaves as they are wherever they stand:
/// normalized alone, and of combining class 0 (no character of this range is the second of
/// a canonical composition without being a combining mark; tested against every preceding
/// character). A bit per code point, made once from ICU4X's data.
static STABLE_2B: LazyLock<[u64; 32]> = LazyLock::new(|| {
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let ccc = CanonicalCombiningClassMapBorrowed::new();
    let mut t = [0u64; 32];
    for cp in 0x80u32..0x800 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let mut b = [0u8; 4];
        if ccc.get_u8(c) == 0 && nfkc.is_normalized(c.encode_utf8(&mut b)) {
            t[(cp >> 6) as usize] |= 1 << (cp & 63);
        }
    }
    t
});

/// Whether NFKC leaves `q` as it is because every non-ASCII character in it is in
/// [`STABLE_2B`] (false says nothing: ICU decides then).
fn nfkc_stable(q: &str) -> bool {
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if x < 0x80 {
            i += 1;
            continue;
        }
        let Some(&y) = b.get(i + 1) else {
            return false;
        };
        if x & 0xE0 != 0xC0 {
            return false;
        }
        let cp = (u32::from(x & 0x1F) << 6) | u32::from(y & 0x3F);
        if STABLE_2B[(cp >> 6) as usize] & (1 << (cp & 63)) == 0 {
            return false;
        }
        i += 2;
    }
    true
}

/// The lowercase of each character below U+0800 when it is one character that is neither
/// whitespace nor changed by [`fold_quote`] (0: not so, take the general way). Made once.
static LOWER_2B: LazyLock<[u16; 0x800]> = LazyLock::new(|| {
    let mut t = [0u16; 0x800];
    for (cp, slot) in t.iter_mut().enumerate() {
        let Some(c) = char::from_u32(cp as u32) else {
            continue;
        };
        let mut lower = c.to_lowercase();
        if let (Some(l), None) = (lower.next(), lower.next()) {
            if (l as u32) < 0x800 && !l.is_whitespace() && !c.is_whitespace() && fold_quote(l) == l
            {
                *slot = l as u16;
            }
        }
    }
    t
});

/// Whether `q` holds a character of [`is_invisible`], by its UTF-8 bytes (a search by
/// characters costs more than the rest of the normalization).
fn has_invisible(q: &str) -> bool {
    let b = q.as_bytes();
    b.iter().enumerate().any(|(i, &x)| {
        (x == 0xE2 && b[i + 1..].starts_with(&[0x80, 0x8B]))
            || (x == 0xEF && b[i + 1..].starts_with(&[0xBB, 0xBF]))
    })
}

/// Lowercase, straight quotes, then words: the same as `push_words` (the reference, in tests) over
/// `nfkc.chars().flat_map(char::to_lowercase).map(fold_quote)` (tested), with ASCII bytes
/// taken through the byte table of the ASCII path: the iterator chain costs about 20 ns a
/// character, most of a non-ASCII question's time.
fn push_lowercase_words(nfkc: &str, out: &mut String) {
    let mut words = Words(None);
    let bytes = nfkc.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            i += 1;
            if ASCII_CLASS[b as usize] == WHITESPACE {
                words.space(out);
            } else {
                words.push(out, b.to_ascii_lowercase() as char);
            }
            continue;
        }
        let Some(c) = nfkc[i..].chars().next() else {
            break;
        };
        i += c.len_utf8();
        // Two-byte letters by table (`to_lowercase` searches a table of all of Unicode).
        if let Some(&l) = LOWER_2B.get(c as usize) {
            if l != 0 {
                words.push(out, char::from_u32(u32::from(l)).unwrap_or(c));
                continue;
            }
        }
        for c in c.to_lowercase().map(fold_quote) {
            if c.is_whitespace() {
                words.space(out);
            } else {
                words.push(out, c);
            }
        }
    }
    words.space(out);
}

/// The word state of [`push_lowercase_words`]: where the open word starts in `out`, if one is
/// open. The separator space before a word is written only once the word turns out to be
/// non-empty, and [`end_word`] strips its trailing punctuation when it ends.
struct Words(Option<usize>);

impl Words {
    #[inline(always)]
    fn push(&mut self, out: &mut String, c: char) {
        if self.0.is_none() {
            if !out.is_empty() {
                out.push(' ');
            }
            self.0 = Some(out.len());
        }
        out.push(c);
    }

    #[inline(always)]
    fn space(&mut self, out: &mut String) {
        if let Some(start) = self.0.take() {
            end_word(out, start);
        }
    }
}

/// The same rules for ASCII text, on bytes: NFKC is the identity on ASCII, and this runs on
/// every hit. Must agree with [`normalize_unicode`] (tested on generated inputs). At the
/// first non-ASCII byte, returns where the word holding it starts (after ASCII whitespace,
/// or 0), with `out` holding the words before it: the caller takes the general path from
/// there.
fn normalize_ascii(q: &[u8], out: &mut String) -> Result<(), usize> {
    // One pass, writing into a buffer as long as the question (the output is never longer:
    // each separator space stands for at least one whitespace byte of the input).
    // `kept`: the output so far, complete words only; a word is written after a separator
    // at `kept` and counts once the word ends, up to its last non-punctuation byte.
    // SAFETY: only ASCII bytes are written (`q` is ASCII; the zero fill is cut off by the
    // truncate), so `out` is UTF-8 when this returns.
    let v = unsafe { out.as_mut_vec() };
    v.clear();
    v.resize(q.len(), 0);
    let (mut kept, mut pos, mut word_end, mut in_word) = (0, 0, 0, false);
    // Where the current word starts in `q`.
    let mut word_at = 0;
    for (i, &b) in q.iter().enumerate() {
        let class = ASCII_CLASS[b as usize];
        if class == NON_ASCII {
            v.truncate(kept);
            return Err(if in_word { word_at } else { i });
        }
        if class == WHITESPACE {
            if in_word {
                kept = word_end;
                in_word = false;
            }
            continue;
        }
        if !in_word {
            in_word = true;
            word_at = i;
            pos = if kept > 0 {
                v[kept] = b' ';
                kept + 1
            } else {
                0
            };
            word_end = kept;
        }
        v[pos] = b.to_ascii_lowercase();
        pos += 1;
        if class != PUNCT {
            word_end = pos;
        }
    }
    if in_word {
        kept = word_end;
    }
    v.truncate(kept);
    Ok(())
}

const WHITESPACE: u8 = 1;
const PUNCT: u8 = 2;
const NON_ASCII: u8 = 3;

/// Per ASCII byte: the whitespace of `char::is_whitespace` (TAB..CR and space), sentence
/// punctuation (the ASCII part of [`is_sentence_punct`]), a byte of a non-ASCII character,
/// or 0 for any other byte.
const ASCII_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut hi = 0x80;
    while hi < 256 {
        t[hi] = NON_ASCII;
        hi += 1;
    }
    t[b' ' as usize] = WHITESPACE;
    let mut b = b'\t';
    while b <= b'\r' {
        t[b as usize] = WHITESPACE;
        b += 1;
    }
    let punct = b"?!.,;:";
    let mut i = 0;
    while i < punct.len() {
        t[punct[i] as usize] = PUNCT;
        i += 1;
    }
    t
};

/// Convenience wrapper around [`normalize_into`].
pub fn normalize(question: &str) -> String {
    let mut out = String::with_capacity(question.len());
    normalize_into(question, &mut out);
    out
}

/// The word rules over any characters, written out on their own (not with [`Words`]): the
/// independent reference `push_lowercase_words` is tested against.
#[cfg(test)]
fn push_words(chars: impl Iterator<Item = char>, out: &mut String) {
    // `word_start` is where the current word begins in `out`; the separator space before a
    // word is written only once the word turns out to be non-empty.
    let mut in_word = false;
    let mut word_start = 0;
    for c in chars {
        if c.is_whitespace() {
            if in_word {
                end_word(out, word_start);
                in_word = false;
            }
        } else {
            if !in_word {
                in_word = true;
                if !out.is_empty() {
                    out.push(' ');
                }
                word_start = out.len();
            }
            out.push(c);
        }
    }
    if in_word {
        end_word(out, word_start);
    }
}

/// Strips trailing sentence punctuation from the word starting at `word_start`, and the
/// separator space before it if nothing is left of the word.
fn end_word(out: &mut String, word_start: usize) {
    while let Some(c) = out[word_start..].chars().next_back() {
        if is_sentence_punct(c) {
            out.truncate(out.len() - c.len_utf8());
        } else {
            break;
        }
    }
    if out.len() == word_start && word_start > 0 {
        out.truncate(word_start - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (input, expected normalized form)
    const CASES: &[(&str, &str)] = &[
        // The three spellings the product promises are one question.
        ("What is our refund policy?", "what is our refund policy"),
        (" what is our REFUND policy ", "what is our refund policy"),
        ("What is our refund policy？", "what is our refund policy"),
        // Runs of any whitespace become one space; tabs and newlines count.
        (
            "what\t is\n\nour  refund\u{00A0}policy",
            "what is our refund policy",
        ),
        // Punctuation before whitespace goes, inside a word it stays.
        ("Hello, world", "hello world"),
        ("wait... what?!", "wait what"),
        ("What is C++?", "what is c++"),
        ("What is C?", "what is c"),
        ("Is 3.5 > 3.14?", "is 3.5 > 3.14"),
        ("e.g. this", "e.g this"),
        ("version 2.0.", "version 2.0"),
        // Punctuation that stands alone disappears with its space.
        ("why ? because", "why because"),
        ("???", ""),
        ("", ""),
        ("   ", ""),
        // Full-width letters, digits and punctuation fold through NFKC.
        ("ＷＨＡＴ　ＩＳ　１＋１？", "what is 1+1"),
        ("こんにちは。", "こんにちは"),
        // Without whitespace after it, punctuation is inside a word and stays.
        ("はい、いいえ", "はい、いいえ"),
        ("はい、 いいえ。", "はい いいえ"),
        // Curly quotes and apostrophes become straight ones.
        ("What\u{2019}s \u{201C}RAG\u{201D}?", "what's \"rag\""),
        ("What's \"RAG\"?", "what's \"rag\""),
        // Compatibility ligatures and composed/decomposed accents agree.
        ("\u{FB01}nance", "finance"),
        ("Caf\u{00E9}", "café"),
        ("Cafe\u{0301}", "café"),
        // Zero-width characters are invisible to the reader, so to the cache too.
        ("re\u{200B}fund", "refund"),
        ("\u{FEFF}refund", "refund"),
        // ... and removed before composition: e, ZWSP, combining acute is é.
        ("e\u{200B}\u{0301}", "é"),
        ("e\u{FEFF}\u{0301} x\u{200B}", "é x"),
        // Non-sentence punctuation is meaning: it stays.
        ("a-b (c) [d] 'e' \"f\" #g", "a-b (c) [d] 'e' \"f\" #g"),
        ("50%?", "50%"),
        // Negations and numbers are untouched (a wrong answer is worse than a miss).
        ("Is it not free?", "is it not free"),
        ("Order 12 or 21?", "order 12 or 21"),
        // Control characters are kept (only whitespace ones are folded).
        ("a\u{0000}b", "a\u{0000}b"),
        // Unicode uppercase beyond ASCII.
        ("ÜBER ΣΟΦΙΑ", "über σοφια"),
    ];

    #[test]
    fn table() {
        for (input, expected) in CASES {
            assert_eq!(normalize(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn idempotent() {
        for (input, _) in CASES {
            let once = normalize(input);
            assert_eq!(normalize(&once), once, "input {input:?}");
        }
    }

    /// The ASCII fast path and the general path agree on every ASCII input; generated from
    /// an alphabet dense in the characters the rules care about.
    #[test]
    fn ascii_fast_path_matches_the_general_path() {
        let alphabet = b"aZ9 \t\n\x0b\x0c\r?!.,;:'\"-+(){}\x00\x1f~";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let mut q = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                q.push(alphabet[(seed % alphabet.len() as u64) as usize] as char);
            }
            let (mut fast, mut general) = (String::new(), String::new());
            assert!(normalize_ascii(q.as_bytes(), &mut fast).is_ok());
            normalize_unicode(&q, &mut general);
            assert_eq!(fast, general, "input {q:?}");
        }
    }

    /// A non-ASCII character anywhere (first, last, after words already written) sends the
    /// whole question down the general path, with nothing of the ASCII attempt left behind.
    #[test]
    fn non_ascii_anywhere_takes_the_general_path() {
        let alphabet = [
            'a', 'Z', ' ', '?', '.', '\t', '\u{3000}', '\u{FF1F}', 'é', '\u{200B}', '\u{0301}',
            '\u{00B4}', '\u{FEFF}', '\u{00A0}', 'İ', '\u{FB01}', '\u{1100}', '\u{1161}',
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut out = String::from("leftover");
        for _ in 0..200_000 {
            let len = (seed % 12) as usize;
            let mut q = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                q.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let mut general = String::new();
            normalize_unicode(&q, &mut general);
            normalize_into(&q, &mut out);
            assert_eq!(out, general, "input {q:?}");
        }
    }

    /// The rules as they were written with `unicode-normalization` (NORMALIZATION_VERSION
    /// qa-norm-v2): the ICU4X path must give the same output, or the version must change.
    fn normalize_before(question: &str) -> String {
        use unicode_normalization::UnicodeNormalization;
        let visible: String = question.chars().filter(|c| !is_invisible(*c)).collect();
        let mut out = String::new();
        push_words(
            visible.nfkc().flat_map(char::to_lowercase).map(fold_quote),
            &mut out,
        );
        out
    }

    /// Every Unicode scalar value alone, after a letter and before a combining mark, and
    /// every base letter with every common combining mark: both implementations agree.
    /// (Where they disagreed, NORMALIZATION_VERSION would have to change with them.)
    #[test]
    fn icu_agrees_with_the_rules_as_first_written() {
        let mut differ = Vec::new();
        let mut q = String::new();
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            for (before, after) in [("", ""), ("a", "\u{0301}"), ("\u{1100}", "\u{1161}")] {
                q.clear();
                q.push_str(before);
                q.push(c);
                q.push_str(after);
                let mut now = String::new();
                normalize_unicode(&q, &mut now);
                if now != normalize_before(&q) {
                    differ.push(q.clone());
                }
            }
        }
        let marks = (0x300..=0x36Fu32)
            .chain(0x1AB0..=0x1AFF)
            .chain(0x1DC0..=0x1DFF)
            .chain(0x20D0..=0x20FF)
            .chain([0x3099, 0x309A, 0x0E48, 0x05B0, 0x064B, 0x093C]);
        for m in marks.filter_map(char::from_u32) {
            for base in "aAeEiIoOuUnNcCsSzZyYwWhHgGkKαΑεΕωΩиИеЕуУかカはハ가".chars()
            {
                for q in [
                    format!("{base}{m}"),
                    format!("{base}\u{0323}{m}"),
                    format!("{base}{m}\u{0323}"),
                    format!("{base}\u{200B}{m} x"),
                ] {
                    let mut now = String::new();
                    normalize_unicode(&q, &mut now);
                    if now != normalize_before(&q) {
                        differ.push(q);
                    }
                }
            }
        }
        let shown: Vec<String> = differ.iter().take(20).map(|q| format!("{q:?}")).collect();
        assert!(
            differ.is_empty(),
            "{} differ: {}",
            differ.len(),
            shown.join(" ")
        );
    }

    /// The byte-wise word splitter agrees with the iterator chain it replaces, on random text
    /// dense in what matters: case pairs with multi-character lowercases, Unicode whitespace,
    /// sentence punctuation, quotes.
    #[test]
    fn lowercase_words_match_the_iterator_chain() {
        let alphabet = [
            'a', 'Z', ' ', '?', '.', '\t', 'É', 'İ', 'Σ', 'ß', '\u{3000}', '\u{00A0}', '\u{2028}',
            '。', '、', '\u{2019}', '\u{201C}', 'Ç', '\u{0301}', '!', 'Ω', 'ǅ',
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..50_000 {
            let len = (seed % 16) as usize;
            let mut q = String::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                q.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let (mut fast, mut chain) = (String::new(), String::new());
            push_lowercase_words(&q, &mut fast);
            push_words(
                q.chars().flat_map(char::to_lowercase).map(fold_quote),
                &mut chain,
            );
            assert_eq!(fast, chain, "input {q:?}");
        }
    }

    /// Every character the fast path takes as NFKC-stable is: after every character below
    /// U+0800 and some beyond, and before a letter, both implementations agree.
    #[test]
    fn stable_two_byte_characters_are_stable_in_every_context() {
        let stable: Vec<char> = (0x80u32..0x800)
            .filter_map(char::from_u32)
            .filter(|c| nfkc_stable(c.encode_utf8(&mut [0u8; 4])))
            .collect();
        assert!(stable.len() > 1000, "{}", stable.len());
        assert!(stable.contains(&'é') && stable.contains(&'Ç') && stable.contains(&'ж'));
        assert!(!nfkc_stable("\u{0301}") && !nfkc_stable("\u{00B4}") && !nfkc_stable("\u{00AA}"));
        let before: Vec<char> = (0x20u32..0x800)
            .chain(0x1E00..0x1F00)
            .chain([0x1100, 0x3042, 0xAC00, 0xFB01])
            .filter_map(char::from_u32)
            .collect();
        let mut now = String::new();
        for &c in &stable {
            for &p in &before {
                let q: String = [p, c, 'x'].iter().collect();
                normalize_unicode(&q, &mut now);
                assert_eq!(now, normalize_before(&q), "{q:?}");
            }
        }
    }

    #[test]
    fn buffer_is_reused() {
        let mut buf = String::from("leftover");
        normalize_into("A B", &mut buf);
        assert_eq!(buf, "a b");
    }

    #[test]
    fn many_combining_marks_do_not_blow_up() {
        let q: String = std::iter::once('a')
            .chain(std::iter::repeat_n('\u{0301}', 10_000))
            .collect();
        let n = normalize(&q);
        assert!(n.starts_with('á'));
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --release --lib normalize::speed -- --ignored --nocapture`: ns per call of
    /// each step for the benchmark's questions.
    #[test]
    #[ignore]
    fn ns_per_call() {
        let qs = [
            "What is our refund policy?",
            "Quelle est votre politique de remboursement ? Ça dépend ?",
        ];
        let n = 200_000;
        let mut out = String::new();
        for q in qs {
            let t = std::time::Instant::now();
            for _ in 0..n {
                normalize_into(std::hint::black_box(q), &mut out);
            }
            let all = t.elapsed().as_nanos() as f64 / n as f64;
            let nfkc = ComposingNormalizerBorrowed::new_nfkc();
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(nfkc.is_normalized(std::hint::black_box(q)));
            }
            let check = t.elapsed().as_nanos() as f64 / n as f64;
            let t = std::time::Instant::now();
            for _ in 0..n {
                out.clear();
                push_lowercase_words(std::hint::black_box(q), &mut out);
            }
            let words = t.elapsed().as_nanos() as f64 / n as f64;
            let t = std::time::Instant::now();
            for _ in 0..n {
                std::hint::black_box(has_invisible(std::hint::black_box(q)));
            }
            let inv = t.elapsed().as_nanos() as f64 / n as f64;
            println!("{q:?}: normalize_into {all:.0} ns, is_normalized {check:.0} ns, lowercase+words {words:.0} ns, invisible {inv:.0} ns");
        }
    }
}
