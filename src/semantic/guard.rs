//! Guards: the checks a semantic match must pass, after the similarity threshold, before the
//! stored question's answer may be served for another question.
//!
//! Sentence embeddings gloss over the words that change an answer: "enable 2FA" and "disable
//! 2FA", "from savings to checking" and "from checking to savings", "Can I fast?" and "Do I
//! have to fast?" all score close to the paraphrases we do want to serve. Each rule here looks
//! for one such difference and refuses the match when it finds it. The rules are few and
//! small; the words they need are data, one table file per language in `lang/` (parsed once),
//! and every rule was kept because it wins on the *tune* half of the labelled pairs; its
//! effect on the test half is in `docs/semantic.md`.
//!
//! Which rules run depends on the language of the two questions (detected from the script and
//! from function words, [`language`]):
//! - every language: `length`, `language` (the two questions are in different languages or
//!   scripts), `number` (numbers and their order), `role` (the same words in another order);
//! - English, German, Spanish, French, Chinese: `negation`, `modal` and `scope` with that
//!   language's lists (`lang/<code>.tsv`);
//! - English, German, Spanish, French: `swap` (one content word swapped; the function words
//!   come from the table);
//! - English only: `antonym`, `role`, `person`, `entity` (and the nouns numbers count).
//!
//! Inputs are questions already normalized by [`crate::normalize`] (lowercase, one space
//! between words). Pure and std only: no Redis types; bounded work (at most [`MAX_WORDS`]
//! words a question, pairwise comparisons over those); small allocations per call (this runs
//! on a worker after an embedding call, never on the main thread).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// Why a semantic match was refused. `as_str` names appear in stats and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// One question is longer than [`MAX_WORDS`] words: too long to check cheaply, and the
    /// mean-pooled embedding of a long text hides a changed detail best.
    Length,
    /// The questions are in different languages or scripts: an answer in the other language
    /// is not an answer.
    Language,
    /// The numbers differ (as multisets), come in another order (`03/04` / `04/03`, `from 2 to
    /// 5`), or (English) count different nouns (`3 shirts and 2 hats` / `2 shirts and 3 hats`).
    Number,
    /// One question is negated and the other is not (or differently often).
    Negation,
    /// One question asks about an obligation (must, have to, required) and the other not.
    Modal,
    /// One question has a word whose opposite is in the other: enable/disable, add/remove.
    Antonym,
    /// The same nouns in other roles around a relation word (from/to, than, on/for).
    Role,
    /// One question is about someone else (their, his, her), or about another person.
    Person,
    /// The named things differ: countries, currencies, months, days, platforms.
    Entity,
    /// One question offers alternatives ("before or after", "me or the supplier") and the
    /// other does not: its answer covers more, or another, case.
    Scope,
    /// The questions are the same but for one content word each ("track my parcel" / "track
    /// my return"): a swapped object or action.
    Swap,
    /// Strict mode only ([`check_strict`], the default when no verifier checks the match):
    /// the questions do not say the same words in the same order, once filler words
    /// (articles, greetings, auxiliaries: the language's `filler` list), word endings,
    /// typos and UK/US spellings are set aside.
    Wording,
}

impl Refusal {
    /// Every refusal, in the order [`check`] tries them.
    pub const ALL: &'static [Refusal] = &[
        Refusal::Length,
        Refusal::Language,
        Refusal::Number,
        Refusal::Negation,
        Refusal::Modal,
        Refusal::Antonym,
        Refusal::Role,
        Refusal::Person,
        Refusal::Entity,
        Refusal::Scope,
        Refusal::Swap,
        Refusal::Wording,
    ];

    /// Short snake_case name, for stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Length => "length",
            Refusal::Language => "language",
            Refusal::Number => "number",
            Refusal::Negation => "negation",
            Refusal::Modal => "modal",
            Refusal::Antonym => "antonym",
            Refusal::Role => "role",
            Refusal::Person => "person",
            Refusal::Entity => "entity",
            Refusal::Scope => "scope",
            Refusal::Swap => "swap",
            Refusal::Wording => "wording",
        }
    }

    /// The refusal named `name` (for the evaluation's ablations).
    pub fn from_name(name: &str) -> Option<Refusal> {
        Refusal::ALL.iter().copied().find(|r| r.as_str() == name)
    }
}

/// The same list as [`Refusal::ALL`].
pub const ALL: &[Refusal] = Refusal::ALL;

/// Questions with more words than this are refused (see [`Refusal::Length`]).
pub const MAX_WORDS: usize = 96;

/// Whether `stored`'s answer may be served for `query`. Both are normalized questions whose
/// embeddings already cleared the similarity threshold. The rules run in the order of
/// [`Refusal::ALL`]; the first that objects names the refusal. Symmetric: the verdict does not
/// depend on which question is the stored one.
///
/// This is the loose set, for a match a verifier confirms next: every rule but
/// [`Refusal::Wording`].
pub fn check(query: &str, stored: &str) -> Result<(), Refusal> {
    check_skipping(query, stored, &[Refusal::Wording])
}

/// [`check`] plus [`Refusal::Wording`]: the set for serving with no verifier. Sentence
/// embeddings cannot tell a paraphrase from the same words with one role, condition or object
/// changed, and no list of such changes is ever complete on questions it has not seen; so,
/// without a verifier, a match may differ from the stored question only in what cannot change
/// the answer (filler words, word endings, typos, spelling), never in a content word or in the
/// order of the content words. Paraphrases in other words are left to the backend.
pub fn check_strict(query: &str, stored: &str) -> Result<(), Refusal> {
    check_skipping(query, stored, &[])
}

/// [`check`] with the rules in `skip` left out: for measuring what each rule is worth
/// (`examples/guard_eval.rs --skip`), not for serving.
pub fn check_skipping(query: &str, stored: &str, skip: &[Refusal]) -> Result<(), Refusal> {
    if query == stored {
        return Ok(());
    }
    let on = |r: Refusal| !skip.contains(&r);
    let tables = tables();
    let (Some(q), Some(s)) = (Question::of(query, tables), Question::of(stored, tables)) else {
        return if on(Refusal::Length) {
            Err(Refusal::Length)
        } else {
            Ok(())
        };
    };
    if on(Refusal::Language) && !same_language(&q, &s) {
        return Err(Refusal::Language);
    }
    // The language whose lists apply: the one detected (if one side is undetermined, the
    // other's).
    let lang = if q.lang == Lang::Unknown {
        s.lang
    } else {
        q.lang
    };

    let english = q.lang == Lang::En && s.lang == Lang::En;
    if on(Refusal::Number) && !same_numbers(&q, &s, english) {
        return Err(Refusal::Number);
    }
    if on(Refusal::Role) && reordered(&q.words, &s.words) {
        return Err(Refusal::Role);
    }
    let table = tables.get(lang);
    if let Some(t) = table {
        if on(Refusal::Negation) && negations(&q, t) != negations(&s, t) {
            return Err(Refusal::Negation);
        }
        if on(Refusal::Modal) && obliges(&q, t) != obliges(&s, t) {
            return Err(Refusal::Modal);
        }
        if on(Refusal::Scope) && alternatives(&q, t) != alternatives(&s, t) {
            return Err(Refusal::Scope);
        }
        // German, Spanish, French: the one-word swap, with the language's function words.
        if !english && !t.by_char && on(Refusal::Swap) && one_word_swapped(&q, &s, t) {
            return Err(Refusal::Swap);
        }
    }
    // Strict mode's rule comes last, so that a pair the other rules name keeps its name.
    let strict = || {
        if on(Refusal::Wording) && reworded(&q, &s, table) {
            Err(Refusal::Wording)
        } else {
            Ok(())
        }
    };
    if !english {
        return strict();
    }
    let en = &tables.en;
    if on(Refusal::Antonym) && opposite(&q, &s, en) {
        return Err(Refusal::Antonym);
    }
    if on(Refusal::Role) && roles_differ(&q, &s, en) {
        return Err(Refusal::Role);
    }
    if on(Refusal::Person) && people(&q, en) != people(&s, en) {
        return Err(Refusal::Person);
    }
    if on(Refusal::Entity) && entities(&q, en) != entities(&s, en) {
        return Err(Refusal::Entity);
    }
    if on(Refusal::Swap) && one_word_swapped(&q, &s, en) {
        return Err(Refusal::Swap);
    }
    strict()
}

// ---------------------------------------------------------------------------------------
// Languages

/// A question's language, as far as the guards need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
    Es,
    Fr,
    Zh,
    /// Latin script, but no language's function words (or a tie): only the language-neutral
    /// rules apply.
    Unknown,
    /// Another script (Cyrillic, Arabic, Japanese kana, ...): only the language-neutral rules.
    Other,
}

/// The language of a normalized question: Han characters make it Chinese, letters of another
/// non-Latin script make it `Other`; Latin text is scored by the function words of each
/// table (`marker` lines) plus letters only one of the languages uses (ä ö ü ß, ñ ¿ ¡, ç è ê
/// à ù); the best score wins, a tie or nothing is `Unknown`, except that plain ASCII with no
/// marker at all is taken for English (short support questions: "refund policy").
pub fn language(q: &str) -> Lang {
    let t = tables();
    let (mut han, mut latin, mut other) = (0usize, 0usize, 0usize);
    let mut hint = [0usize; 4];
    for c in q.chars() {
        if is_han(c) {
            han += 1;
        } else if c.is_alphabetic() {
            if c.is_ascii() || ('\u{c0}'..='\u{24f}').contains(&c) {
                latin += 1;
            } else {
                other += 1;
            }
            match c {
                'ä' | 'ö' | 'ü' | 'ß' => hint[1] += 2,
                'ñ' | '¿' | '¡' => hint[2] += 2,
                'ç' | 'è' | 'ê' | 'à' | 'ù' | 'œ' | 'â' | 'î' | 'ô' | 'û' => hint[3] += 1,
                _ => {}
            }
        } else if matches!(c, '¿' | '¡') {
            hint[2] += 2;
        }
    }
    if han > 0 && han * 3 >= latin {
        return Lang::Zh;
    }
    if other > latin {
        return Lang::Other;
    }
    let mut score = hint;
    for w in words(q).take(MAX_WORDS) {
        for (i, table) in [&t.en, &t.de, &t.es, &t.fr].into_iter().enumerate() {
            score[i] += usize::from(table.marker.contains(w));
        }
    }
    let best = *score.iter().max().unwrap_or(&0);
    if best == 0 {
        return if q.is_ascii() {
            Lang::En
        } else {
            Lang::Unknown
        };
    }
    let mut winners = score.iter().enumerate().filter(|(_, s)| **s == best);
    match (winners.next(), winners.next()) {
        (Some((i, _)), None) => [Lang::En, Lang::De, Lang::Es, Lang::Fr][i],
        _ => Lang::Unknown,
    }
}

fn is_han(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{f900}'..='\u{faff}')
}

/// Different detected languages, or different scripts, are different questions. `Unknown`
/// Latin text is compared only by script.
fn same_language(a: &Question, b: &Question) -> bool {
    let script = |l: Lang| match l {
        Lang::Zh => 1,
        Lang::Other => 2,
        _ => 0,
    };
    if script(a.lang) != script(b.lang) {
        return false;
    }
    a.lang == b.lang || a.lang == Lang::Unknown || b.lang == Lang::Unknown
}

// ---------------------------------------------------------------------------------------
// Tables (src/semantic/lang/*.tsv)

/// One language's lists. Only English fills them all.
#[derive(Default)]
struct Table {
    marker: HashSet<&'static str>,
    negation: HashSet<&'static str>,
    /// Single words, and two-word phrases joined by `_`.
    must: HashSet<&'static str>,
    /// Words that join alternatives (`or`).
    alternative: HashSet<&'static str>,
    /// Whether `negation`/`must` entries are single characters matched anywhere (Chinese).
    by_char: bool,
    number: HashMap<&'static str, &'static str>,
    determiner: HashSet<&'static str>,
    same: HashMap<&'static str, &'static str>,
    /// Relation word to its class (the line it is on).
    relation: HashMap<&'static str, u8>,
    /// Third-party word to the person it stands for (`his` is `he`).
    third_party: HashMap<&'static str, &'static str>,
    stop: HashSet<&'static str>,
    /// Words whose presence never changes what is asked (strict mode; by character for
    /// Chinese).
    filler: HashSet<&'static str>,
    /// Pronouns read as their person in strict mode (`my` is `1`, `your` is `2`).
    person: HashMap<&'static str, &'static str>,
    /// Stem (or `stem_word` phrase) to the antonym pairs it is on: (side a bits, side b bits).
    antonym: HashMap<String, (u128, u128)>,
    antonym_pairs: usize,
    entity: HashMap<&'static str, u16>,
}

struct Tables {
    en: Table,
    de: Table,
    es: Table,
    fr: Table,
    zh: Table,
}

impl Tables {
    fn get(&self, lang: Lang) -> Option<&Table> {
        match lang {
            Lang::En => Some(&self.en),
            Lang::De => Some(&self.de),
            Lang::Es => Some(&self.es),
            Lang::Fr => Some(&self.fr),
            Lang::Zh => Some(&self.zh),
            Lang::Unknown | Lang::Other => None,
        }
    }
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| Tables {
        en: parse(include_str!("lang/en.tsv")),
        de: parse(include_str!("lang/de.tsv")),
        es: parse(include_str!("lang/es.tsv")),
        fr: parse(include_str!("lang/fr.tsv")),
        zh: Table {
            by_char: true,
            ..parse(include_str!("lang/zh.tsv"))
        },
    })
}

/// The list names a table file may use (others are a typo: tested).
#[cfg(test)]
const LIST_NAMES: &[&str] = &[
    "marker",
    "filler",
    "person",
    "negation",
    "must",
    "alternative",
    "number",
    "determiner",
    "same",
    "relation",
    "third_party",
    "stop",
    "antonym",
    "entity",
];

fn lines(text: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
}

/// `word=value`, or `word` standing for itself.
fn pair(w: &'static str) -> (&'static str, &'static str) {
    w.split_once('=').unwrap_or((w, w))
}

/// A phrase of a table (`turn_on`) stemmed part by part, as questions are read.
fn stem_phrase(p: &str) -> String {
    p.split('_').map(stem).collect::<Vec<_>>().join("_")
}

fn parse(text: &'static str) -> Table {
    let mut t = Table::default();
    let mut relation_class = 0u8;
    let mut entity_id = 0u16;
    for (name, list) in lines(text) {
        let items = list.split_whitespace();
        match name {
            "marker" => t.marker.extend(items),
            "negation" => t.negation.extend(items),
            "must" => t.must.extend(items),
            "alternative" => t.alternative.extend(items),
            "number" => t.number.extend(items.map(pair)),
            "determiner" => t.determiner.extend(items),
            "same" => t.same.extend(items.map(pair)),
            "relation" => {
                for w in items {
                    t.relation.entry(w).or_insert(relation_class);
                }
                relation_class = relation_class.saturating_add(1);
            }
            "third_party" => t.third_party.extend(items.map(pair)),
            "stop" => t.stop.extend(items),
            "filler" => t.filler.extend(items),
            "person" => t.person.extend(items.map(pair)),
            "antonym" => {
                let bit = 1u128.checked_shl(t.antonym_pairs as u32).unwrap_or(0);
                t.antonym_pairs += 1;
                let (a, b) = list.split_once('|').unwrap_or((list, ""));
                for w in a.split_whitespace() {
                    t.antonym.entry(stem_phrase(w)).or_default().0 |= bit;
                }
                for w in b.split_whitespace() {
                    t.antonym.entry(stem_phrase(w)).or_default().1 |= bit;
                }
            }
            "entity" => {
                for w in items {
                    t.entity.insert(w, entity_id);
                }
                entity_id = entity_id.saturating_add(1);
            }
            _ => {}
        }
    }
    t
}

// ---------------------------------------------------------------------------------------
// Words

/// Splits a normalized question into words: runs of letters and digits, keeping `.` and
/// `,` between digits (`3.5`, `1,000`), an apostrophe between letters (`don't`), and
/// trailing `+`/`#` after a letter (`c++`, `c#`). Everything else separates words.
struct Words<'a> {
    s: &'a str,
    pos: usize,
}

fn words(s: &str) -> Words<'_> {
    Words { s, pos: 0 }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.s.get(self.pos..)?;
        let mut it = rest.char_indices().peekable();
        let start = loop {
            match it.peek() {
                None => {
                    self.pos = self.s.len();
                    return None;
                }
                Some(&(i, c)) if c.is_alphanumeric() => break i,
                Some(_) => {
                    it.next();
                }
            }
        };
        let mut end = start;
        let mut prev = '\0';
        while let Some((i, c)) = it.next() {
            let next = it.peek().map(|&(_, n)| n);
            let keep = c.is_alphanumeric()
                || (matches!(c, '.' | ',')
                    && prev.is_ascii_digit()
                    && next.is_some_and(|n| n.is_ascii_digit()))
                || (c == '\'' && prev.is_alphabetic() && next.is_some_and(char::is_alphabetic))
                || (matches!(c, '+' | '#')
                    && (prev.is_alphabetic() || prev == '+')
                    && !next.is_some_and(char::is_alphanumeric));
            if !keep {
                break;
            }
            end = i + c.len_utf8();
            prev = c;
        }
        // The first char is always kept, so `end > start`: every call makes progress.
        self.pos += end;
        rest.get(start..end)
    }
}

/// `word` without a possessive `'s` (`paypal's` is `paypal`).
fn base(word: &str) -> &str {
    word.strip_suffix("'s").unwrap_or(word)
}

/// A light stemmer that only returns a prefix of its input: drops a possessive, then one of
/// `ies`/`ing`/`ed`/`es`/`s`/`ly`/`y`/`e` (leaving at least 3 letters; not the `s` of `ss`),
/// and a doubled final consonant, again until nothing changes, so it is idempotent
/// (`stem(stem(w)) == stem(w)`): `processed`, `processes` and `process` are all `process`;
/// `shipping`, `shipped` and `ships` are all `ship`.
fn stem(word: &str) -> &str {
    let mut s = word;
    loop {
        let next = stem_once(s);
        if next.len() == s.len() {
            return s;
        }
        s = next;
    }
}

fn stem_once(w: &str) -> &str {
    if let Some(rest) = w.strip_suffix("'s") {
        return rest;
    }
    for suffix in ["ies", "ing", "ed", "es", "s", "ly", "y", "e"] {
        let Some(rest) = w.strip_suffix(suffix) else {
            continue;
        };
        if suffix == "s" && rest.ends_with('s') {
            continue;
        }
        if rest.chars().count() >= 3 {
            let b = rest.as_bytes();
            let n = b.len();
            if n >= 4
                && b[n - 1] == b[n - 2]
                && b[n - 1].is_ascii_lowercase()
                && !b"aeiouls".contains(&b[n - 1])
            {
                return &rest[..n - 1];
            }
            return rest;
        }
    }
    w
}

/// Whether two stems are the same word up to a typo or a UK/US spelling (`colour`/`color`,
/// `memroy`/`memory`: an optimal-string-alignment distance of 1 for words of 4+ letters, 2
/// for 8+), or one is a shortened form of the other (`app`/`application`).
fn near(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    // A shortened form: `app`/`application`, `info`/`information`.
    if a.len().min(b.len()) >= 3 && (a.starts_with(b) || b.starts_with(a)) {
        return true;
    }
    let shortest = a.chars().count().min(b.chars().count());
    let allowed = match shortest {
        0..=3 => return false,
        4..=7 => 1,
        _ => 2,
    };
    within(a, b, allowed)
}

/// Whether the optimal-string-alignment distance (edits and swaps of neighbours) between two
/// words is at most `allowed`.
fn within(a: &str, b: &str, allowed: usize) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > allowed {
        return false;
    }
    // The full table: words are short.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()] <= allowed
}

// ---------------------------------------------------------------------------------------
// The rules

/// One question, split once.
struct Question<'a> {
    text: &'a str,
    lang: Lang,
    words: Vec<&'a str>,
}

impl<'a> Question<'a> {
    /// `None` when the question has more than [`MAX_WORDS`] words.
    fn of(text: &'a str, _tables: &Tables) -> Option<Question<'a>> {
        let words: Vec<&str> = words(text).take(MAX_WORDS + 1).collect();
        if words.len() > MAX_WORDS {
            return None;
        }
        Some(Question {
            text,
            lang: language(text),
            words,
        })
    }

    /// The content word a relation word or a number points at: the next word that is not a
    /// determiner (or `of`), read as its person (`me` is `i`) and stemmed; `None` at the end,
    /// or when it is a number or a relation word.
    fn object(&self, after: usize, en: &Table) -> Option<&'a str> {
        let w = self
            .words
            .iter()
            .skip(after + 1)
            .find(|w| !en.determiner.contains(*w) && **w != "of")?;
        if w.bytes().any(|b| b.is_ascii_digit()) || en.relation.contains_key(w) {
            return None;
        }
        Some(stem(en.same.get(w).copied().unwrap_or(w)))
    }

    fn stems(&self, en: &Table) -> Vec<&'a str> {
        self.words
            .iter()
            .map(|w| stem(en.same.get(w).copied().unwrap_or(w)))
            .collect()
    }
}

/// A number as it is compared: digits (leading zeros and thousands commas dropped), or a
/// word that mixes letters and digits as a whole (`ipv6`, `v2`); and (English) the noun it
/// counts.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Num<'a> {
    value: String,
    noun: Option<&'a str>,
}

fn numbers<'a>(q: &Question<'a>, english: bool, en: &Table) -> Vec<Num<'a>> {
    let mut out = Vec::new();
    for (i, w) in q.words.iter().enumerate() {
        let noun = |tail: &'a str| -> Option<&'a str> {
            if !english {
                return None;
            }
            match tail {
                "" | "st" | "nd" | "rd" | "th" => q.object(i, en),
                t => Some(t),
            }
        };
        if english {
            if let Some(v) = en.number.get(w) {
                out.push(Num {
                    value: (*v).to_string(),
                    noun: noun(""),
                });
                continue;
            }
        }
        if !w.bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        if w.starts_with(|c: char| c.is_ascii_alphabetic())
            && w.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            out.push(Num {
                value: (*w).to_string(),
                noun: noun(""),
            });
            continue;
        }
        // Runs of digits (with `.` or `,` between digits) anywhere in the word: `64gb`,
        // `1,000.50`, `03.04`, `30天后`.
        let mut rest: &'a str = w;
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            let run = &rest[start..];
            let len = run
                .char_indices()
                .find(|&(k, c)| {
                    !(c.is_ascii_digit()
                        || (matches!(c, '.' | ',')
                            && run[k + 1..].starts_with(|d: char| d.is_ascii_digit())))
                })
                .map_or(run.len(), |(k, _)| k);
            let digits: String = run[..len].chars().filter(|c| *c != ',').collect();
            let trimmed = digits.trim_start_matches('0');
            let value = if trimmed.is_empty() || trimmed.starts_with('.') {
                digits.clone()
            } else {
                trimmed.to_string()
            };
            let after = &run[len..];
            let letters = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .map_or(after, |k| &after[..k]);
            // A time of day keeps its half: `5pm` is not `5am` (nor `5 pm` `5 am`).
            let next = q.words.get(i + 1).copied().unwrap_or("");
            let half = [letters, if letters.is_empty() { next } else { "" }]
                .into_iter()
                .find(|h| matches!(*h, "am" | "pm"));
            out.push(Num {
                value: match half {
                    Some(h) => format!("{value}{h}"),
                    None => value,
                },
                // `6 pm class`: the noun comes after the half of the day.
                noun: if half.is_some() && letters.is_empty() && english {
                    q.object(i + 1, en)
                } else {
                    noun(letters)
                },
            });
            rest = after;
        }
    }
    out
}

/// Same numbers, in the same order (English: or in another order when each counts the same
/// noun in both), and (English) no two numbers' nouns swapped.
fn same_numbers(q: &Question, s: &Question, english: bool) -> bool {
    let en = &tables().en;
    let (a, b) = (numbers(q, english, en), numbers(s, english, en));
    let values = |n: &[Num]| n.iter().map(|x| x.value.clone()).collect::<Vec<_>>();
    let (va, vb) = (values(&a), values(&b));
    let (mut sa, mut sb) = (va.clone(), vb.clone());
    sa.sort();
    sb.sort();
    if sa != sb {
        return false;
    }
    if va != vb {
        // Another order is the same question only when each number counts its own noun
        // ("2 adults and 3 children" / "3 children and 2 adults").
        let mut nouns: Vec<_> = a.iter().map(|n| n.noun).collect();
        nouns.sort();
        nouns.dedup();
        if !english || nouns.len() != a.len() || nouns.contains(&None) {
            return false;
        }
        let (mut ka, mut kb) = (a.clone(), b.clone());
        ka.sort();
        kb.sort();
        return ka == kb;
    }
    // Same order: a noun counted by one number here and by another there is a swap.
    !a.iter().zip(&b).any(|(x, y)| match (x.noun, y.noun) {
        (Some(nx), Some(ny)) => nx != ny && b.iter().any(|z| z.noun == Some(nx)),
        _ => false,
    })
}

fn negations(q: &Question, t: &Table) -> usize {
    if t.by_char {
        let mut buf = [0u8; 4];
        return q
            .text
            .chars()
            .filter(|c| t.negation.contains(&*c.encode_utf8(&mut buf)))
            .count();
    }
    q.words
        .iter()
        .filter(|w| t.negation.contains(*w) || w.ends_with("n't"))
        .count()
}

/// How many alternatives a question joins (`or`, `oder`, `o`, `ou`; Chinese `或`, `还是`).
fn alternatives(q: &Question, t: &Table) -> usize {
    if t.by_char {
        let mut buf = [0u8; 4];
        return q
            .text
            .chars()
            .filter(|c| t.alternative.contains(&*c.encode_utf8(&mut buf)))
            .count();
    }
    q.words
        .iter()
        .filter(|w| t.alternative.contains(*w))
        .count()
}

/// The question asks about an obligation: a `must` word, or a two-word `must` phrase.
fn obliges(q: &Question, t: &Table) -> bool {
    if t.by_char {
        let mut buf = [0u8; 4];
        return q
            .text
            .chars()
            .any(|c| t.must.contains(&*c.encode_utf8(&mut buf)));
    }
    q.words.iter().any(|w| t.must.contains(*w))
        || q.words.windows(2).any(|p| {
            let phrase = format!("{}_{}", p[0], p[1]);
            t.must.contains(phrase.as_str())
        })
}

/// The antonym sides a question touches: (side a bits, side b bits), by stem and by
/// two-word phrase (`log in`, `turn off`).
fn sides(q: &Question, en: &Table) -> (u128, u128) {
    let stems = q.stems(en);
    let mut bits = (0u128, 0u128);
    let mut add = |key: &str| {
        if let Some(&(a, b)) = en.antonym.get(key) {
            bits.0 |= a;
            bits.1 |= b;
        }
    };
    for (i, s) in stems.iter().enumerate() {
        add(s);
        if let Some(next) = stems.get(i + 1) {
            add(&format!("{s}_{next}"));
        }
    }
    bits
}

/// Prefixes that make a word its opposite: `lock`/`unlock`, `connect`/`disconnect`,
/// `valid`/`invalid`, `refundable`/`nonrefundable`.
const OPPOSITE_PREFIXES: &[&str] = &["un", "dis", "de", "non", "in", "im", "il", "ir"];

/// Some antonym pair has one side only in one question and the other side only in the
/// other; or one question has `prefix + w` where the other has `w`.
fn opposite(q: &Question, s: &Question, en: &Table) -> bool {
    let ((qa, qb), (sa, sb)) = (sides(q, en), sides(s, en));
    if (qa & !qb & sb & !sa) | (qb & !qa & sa & !sb) != 0 {
        return true;
    }
    prefixed(q, s) || prefixed(s, q)
}

fn prefixed(q: &Question, s: &Question) -> bool {
    q.words.iter().any(|w| {
        OPPOSITE_PREFIXES.iter().any(|p| {
            w.strip_prefix(p).is_some_and(|root| {
                root.chars().count() >= 4
                    && s.words.contains(&root)
                    && !q.words.contains(&root)
                    && !s.words.contains(w)
            })
        })
    })
}

/// The (relation class, object) pairs of a question: `from savings`, `to checking`.
fn relations<'a>(q: &Question<'a>, en: &Table) -> Vec<(u8, &'a str)> {
    q.words
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((*en.relation.get(w)?, q.object(i, en)?)))
        .collect()
}

/// A possessor in one question is a plain word of the other ("can my daughter use my data" /
/// "can I use my daughter's data"), unless that one says "of the X" ("the app's language" /
/// "the language of the app").
fn possessor_moved(q: &Question, s: &Question) -> bool {
    q.words.iter().any(|w| {
        let Some(root) = w.strip_suffix("'s") else {
            return false;
        };
        s.words
            .iter()
            .enumerate()
            .any(|(i, x)| *x == root && !s.words[i.saturating_sub(2)..i].contains(&"of"))
            && !s.words.contains(w)
    })
}

/// Roles differ: a possessor moved ([`possessor_moved`]); or around one relation class, each
/// question's object is a word of the other question (swapped: "from A to B" / "from B to
/// A", "A than B" / "B than A"); or one object moved to another class ("on the replica" /
/// "for the replica").
fn roles_differ(q: &Question, s: &Question, en: &Table) -> bool {
    if possessor_moved(q, s) || possessor_moved(s, q) {
        return true;
    }
    let (rq, rs) = (relations(q, en), relations(s, en));
    let (stems_q, stems_s) = (q.stems(en), s.stems(en));
    for &(k, x) in &rq {
        if rs.contains(&(k, x)) {
            continue;
        }
        for &(k2, y) in &rs {
            if rq.contains(&(k2, y)) {
                continue;
            }
            if k == k2 && x != y && stems_s.contains(&x) && stems_q.contains(&y) {
                return true;
            }
            // `to` and `for` both introduce a purpose ("a fee to change" / "a fee for
            // changing"): not a role change between those two.
            if k != k2 && x == y && !(to_for(en, k) && to_for(en, k2)) {
                return true;
            }
        }
    }
    false
}

fn to_for(en: &Table, class: u8) -> bool {
    ["to", "for"]
        .iter()
        .any(|w| en.relation.get(w) == Some(&class))
}

/// The same words in another order: "Is A cheaper than B?" / "Is B cheaper than A?", "de
/// tarifa fija a variable" / "de tarifa variable a fija". Any language (Chinese: by
/// character).
fn reordered(a: &[&str], b: &[&str]) -> bool {
    if a == b || a.len() != b.len() {
        return false;
    }
    if let ([x], [y]) = (a, b) {
        // One unsplit run (Chinese): compare its characters.
        if !x.chars().any(is_han) {
            return false;
        }
        let (mut x, mut y): (Vec<char>, Vec<char>) = (x.chars().collect(), y.chars().collect());
        x.sort_unstable();
        y.sort_unstable();
        return x == y;
    }
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    x.sort_unstable();
    y.sort_unstable();
    x == y
}

/// The third parties a question is about (`his` is `he`), sorted, without repeats.
fn people<'a>(q: &Question<'a>, en: &'a Table) -> Vec<&'a str> {
    let mut p: Vec<&str> = q
        .words
        .iter()
        .filter_map(|w| en.third_party.get(base(w)).copied())
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// The named things of a question, sorted, without repeats.
fn entities(q: &Question, en: &Table) -> Vec<u16> {
    let mut e: Vec<u16> = q
        .words
        .iter()
        .filter_map(|w| {
            en.entity
                .get(w)
                .or_else(|| en.entity.get(base(w)))
                .or_else(|| w.strip_suffix('s').and_then(|x| en.entity.get(x)))
                .copied()
        })
        .collect();
    e.sort_unstable();
    e.dedup();
    e
}

/// The content stems of a question: not function words, determiners, negations, obligation
/// words, relation words, numbers or entities (their own rules compare those). For a table
/// without `stop` words (German, Spanish, French), its `marker` words are the function words.
fn content<'a>(q: &Question<'a>, t: &Table) -> Vec<&'a str> {
    let stop = if t.stop.is_empty() {
        &t.marker
    } else {
        &t.stop
    };
    let mut c: Vec<&str> = q
        .words
        .iter()
        .filter(|w| {
            !(stop.contains(*w)
                || t.determiner.contains(*w)
                || t.negation.contains(*w)
                || w.ends_with("n't")
                || t.must.contains(*w)
                || t.relation.contains_key(*w)
                || t.number.contains_key(*w)
                || t.entity.contains_key(base(w))
                || w.bytes().any(|b| b.is_ascii_digit()))
        })
        .map(|w| stem(t.same.get(w).copied().unwrap_or(w)))
        .collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// A question's words as strict mode compares them: filler words left out, pronouns read as
/// their person, negations as one word, number words as digits, the rest stemmed (Chinese: each run of characters
/// without its filler characters, compared whole).
fn wording<'a>(q: &Question<'a>, t: Option<&Table>) -> Vec<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    let Some(t) = t else {
        return q.words.iter().map(|w| Cow::Borrowed(stem(w))).collect();
    };
    q.words
        .iter()
        .filter_map(|&w| {
            if t.by_char {
                let kept: String = w
                    .chars()
                    .filter(|c| {
                        let mut b = [0u8; 4];
                        !t.filler.contains(&*c.encode_utf8(&mut b))
                    })
                    .collect();
                return (!kept.is_empty()).then_some(Cow::Owned(kept));
            }
            if t.filler.contains(w) || t.filler.contains(base(w)) {
                return None;
            }
            // Every negation reads the same (`won't`, `doesn't`, `not`): their count is the
            // negation rule's.
            if t.negation.contains(w) || w.ends_with("n't") {
                return Some(Cow::Borrowed("not"));
            }
            let w = t.person.get(w).copied().unwrap_or(w);
            let w = t.number.get(w).copied().unwrap_or(w);
            Some(Cow::Borrowed(stem(w)))
        })
        .collect()
}

/// Whether two words count as one in strict mode: equal, or (letters only, 5+ of them) one
/// typo or UK/US spelling apart (2 from 9 letters). No shortened forms: `car`/`card`.
fn same_word(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let letters = |w: &str| w.chars().all(|c| c.is_alphabetic() && !is_han(c));
    if !(letters(a) && letters(b)) {
        return false;
    }
    let allowed = match a.chars().count().min(b.chars().count()) {
        0..=4 => return false,
        5..=8 => 1,
        _ => 2,
    };
    within(a, b, allowed)
}

/// Strict mode: the two questions' words (see [`wording`]) differ in number, in a word, or in
/// order.
fn reworded(q: &Question, s: &Question, t: Option<&Table>) -> bool {
    let (a, b) = (wording(q, t), wording(s, t));
    a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| !same_word(x, y))
}

/// Content words two questions must share before a one-word difference counts as a swap.
const SWAP_MIN_SHARED: usize = 1;

/// The questions share content, and each has exactly one content word (up to typos) that
/// the other lacks: the same question about another thing.
fn one_word_swapped(q: &Question, s: &Question, t: &Table) -> bool {
    let (cq, cs) = (content(q, t), content(s, t));
    let only = |a: &[&str], b: &[&str]| a.iter().filter(|x| !b.iter().any(|y| near(x, y))).count();
    let shared = cq.iter().filter(|x| cs.contains(x)).count();
    shared >= SWAP_MIN_SHARED && only(&cq, &cs) == 1 && only(&cs, &cq) == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn run(q: &str, c: &str) -> Result<(), Refusal> {
        check(&normalize(q), &normalize(c))
    }

    /// (query, stored, expected): rows grouped by rule, a served paraphrase next to each
    /// refusal so a rule that refuses everything fails too. Every row is also checked the
    /// other way round (the rules are symmetric).
    #[rustfmt::skip]
    const CASES: &[(&str, &str, Result<(), Refusal>)] = &[
        // Paraphrases pass: wording, typos, UK/US spelling, possessives, "third parties".
        ("What is our refund policy?", "What is your refund policy?", Ok(())),
        ("How do I reset my password?", "How can I reset my password", Ok(())),
        ("How do I change the colour of my avatar?", "How do I change the color of my avatar?", Ok(())),
        ("how do i give my container more memroy", "how do i give my container more memory", Ok(())),
        ("Do you share my data with third parties?", "Is my data shared with third parties?", Ok(())),
        ("Was my order processed?", "Has my order been processed", Ok(())),
        // Language and script.
        ("Is shipping free?", "Ist der Versand kostenlos?", Err(Refusal::Language)),
        ("Is shipping free?", "运费是免费的吗", Err(Refusal::Language)),
        ("¿El envío es gratis?", "La livraison est-elle gratuite ?", Err(Refusal::Language)),
        ("Kostet der Versand etwas?", "Ist der Versand kostenlos?", Ok(())),
        // Numbers: values, order, nouns; number words in English only.
        ("Refund within 14 days?", "Refund within 30 days?", Err(Refusal::Number)),
        ("Is version 3.5 supported?", "Is version 35 supported?", Err(Refusal::Number)),
        ("Does it support IPv4?", "Does it support IPv6?", Err(Refusal::Number)),
        ("Can I add two users?", "Can I add 2 users?", Ok(())),
        ("Is 1,000 the limit?", "Is 1000 the limit?", Ok(())),
        ("What is the price of the 64 GB model?", "How much is the 64GB version?", Ok(())),
        ("My appointment is on 03/04", "My appointment is on 04/03", Err(Refusal::Number)),
        ("Scale from 2 to 5 replicas", "Scale from 5 to 2 replicas", Err(Refusal::Number)),
        ("Room for 2 adults and 3 children?", "Room for 3 adults and 2 children?", Err(Refusal::Number)),
        ("Room for 2 adults and 3 children?", "Is there a room for 3 children and 2 adults?", Ok(())),
        // The very same words in another order are refused even so (see `role`).
        ("Room for 2 adults and 3 children?", "Room for 3 children and 2 adults?", Err(Refusal::Role)),
        ("Discount on 3 shirts and 2 hats?", "Discount on 3 hats and 2 shirts?", Err(Refusal::Number)),
        ("Meeting at 5pm?", "Meeting at 5am?", Err(Refusal::Number)),
        ("Bestellung vom 03.04.", "Bestellung vom 04.03.", Err(Refusal::Number)),
        ("30天后还能退货吗", "60天后还能退货吗", Err(Refusal::Number)),
        // Negations, per language.
        ("Is shipping free?", "Is shipping not free?", Err(Refusal::Negation)),
        ("Why can't I log in?", "Why can I log in?", Err(Refusal::Negation)),
        ("Ist der Versand kostenlos?", "Ist der Versand nicht kostenlos?", Err(Refusal::Negation)),
        ("¿El envío es gratis?", "¿El envío no es gratis?", Err(Refusal::Negation)),
        ("La livraison est-elle gratuite ?", "La livraison n'est-elle pas gratuite ?", Err(Refusal::Negation)),
        ("运费是免费的吗", "运费不是免费的吗", Err(Refusal::Negation)),
        // Obligation.
        ("Can I fast before a blood test?", "Do I have to fast before a blood test?", Err(Refusal::Modal)),
        ("Do I have to fast before a blood test?", "Is fasting required before a blood test?", Ok(())),
        ("Muss ich mit Kreditkarte bezahlen?", "Kann ich mit Kreditkarte bezahlen?", Err(Refusal::Modal)),
        ("¿Tengo que pagar con tarjeta?", "¿Puedo pagar con tarjeta?", Err(Refusal::Modal)),
        // Antonyms: by stem, by two-word phrase, by prefix.
        ("How do I enable 2FA?", "How do I disable 2FA?", Err(Refusal::Antonym)),
        ("How do I add a user?", "How do I remove a user?", Err(Refusal::Antonym)),
        ("How do I log in?", "How do I log out?", Err(Refusal::Antonym)),
        ("How do I lock my card?", "How do I unlock my card?", Err(Refusal::Antonym)),
        ("Is this code valid?", "Is this code invalid?", Err(Refusal::Antonym)),
        ("Turn on notifications", "Turn off notifications", Err(Refusal::Antonym)),
        ("Can I add and remove users?", "Is it possible to remove and add users?", Ok(())),
        // Roles around a relation word.
        ("How do I copy files from the server to my laptop?", "How do I copy files from my laptop to the server?", Err(Refusal::Role)),
        ("Is the blue jacket cheaper than the black one?", "Is the black jacket cheaper than the blue one?", Err(Refusal::Role)),
        ("Can I run the migration on the replica?", "Can I run the migration for the replica?", Err(Refusal::Role)),
        ("¿Puedo cambiar de tarifa fija a variable?", "¿Puedo cambiar de tarifa variable a fija?", Err(Refusal::Role)),
        ("Ist der Nachttarif günstiger als der Tagtarif?", "Ist der Tagtarif günstiger als der Nachttarif?", Err(Refusal::Role)),
        // Alternatives.
        ("Is the invoice sent before or after the payment?", "Is the invoice sent before the payment?", Err(Refusal::Scope)),
        ("Can I repay my loan or pause it?", "Is it possible to repay my loan or to pause it?", Ok(())),
        ("How do I move money from savings into checking?", "How do I move money from my savings to my checking?", Ok(())),
        ("Can my daughter use my data allowance?", "Can I use my daughter's data allowance?", Err(Refusal::Role)),
        ("How do I change the language of the app?", "How can I change the app's language?", Ok(())),
        // Another person.
        ("How do I reset my password?", "How do I reset their password?", Err(Refusal::Person)),
        ("Can my son's records go to his school?", "Can my daughter's records go to her school?", Err(Refusal::Person)),
        // Entities.
        ("Do you ship to Canada?", "Do you ship to Mexico?", Err(Refusal::Entity)),
        ("Do you ship to the USA?", "Do you ship to America?", Ok(())),
        ("Is the clinic open on Saturdays?", "Is the clinic open on Sundays?", Err(Refusal::Entity)),
        // One content word swapped (not a typo of it).
        ("How do I track my parcel?", "How do I track my return?", Err(Refusal::Swap)),
        ("How do I track my parcel?", "How do I track my parcle?", Ok(())),
    ];

    #[test]
    fn table() {
        for (q, c, want) in CASES {
            assert_eq!(run(q, c), *want, "query {q:?} stored {c:?}");
            assert_eq!(run(c, q), *want, "query {c:?} stored {q:?} (swapped)");
        }
    }

    /// Strict mode (no verifier): only filler words, endings, typos and spelling may differ.
    /// A served row next to each refusal, so a rule that refuses everything fails too; every
    /// row is also checked the other way round.
    #[rustfmt::skip]
    const STRICT: &[(&str, &str, Result<(), Refusal>)] = &[
        ("How do I reset my password?", "how can i reset the pasword", Ok(())),
        ("How do I reset my password?", "How do I recover my password?", Err(Refusal::Swap)),
        ("How do I reset my password?", "How do I get my password back?", Err(Refusal::Swap)),
        ("How do I reset my password?", "Is there a way to reset a password I forgot?", Err(Refusal::Wording)),
        ("What is our refund policy?", "What is your refund policy?", Ok(())),
        ("Why won't my device turn on?", "Why doesn't my device turn on?", Ok(())),
        ("How do I change the colour of my avatar?", "How do I change the color of my avatar?", Ok(())),
        ("Is the battery covered by the warranty?", "Does the warranty cover the battery?", Err(Refusal::Wording)),
        // A condition added, an object added: refused with no verifier.
        ("How do I delete my account?", "How can I permanently delete my account?", Err(Refusal::Wording)),
        ("I lost my SSH key", "I lost my SSH key and my password", Err(Refusal::Wording)),
        // Roles moved without a relation word the loose rules know.
        ("Can parents see their child's grades?", "Can children see their parents' grades?", Err(Refusal::Wording)),
        // No shortened forms in strict mode (`car`/`card`).
        ("Can I pay by car?", "Can I pay by card?", Err(Refusal::Wording)),
        // A named rule still names its refusal.
        ("Is shipping free?", "Is shipping not free?", Err(Refusal::Negation)),
        // Other languages: their fillers; Chinese by character.
        ("Wie kann ich mein Passwort ändern?", "Wie kann ich das Passwort ändern?", Ok(())),
        ("Wie kann ich mein Passwort ändern?", "Wie kann ich mein Passwort löschen?", Err(Refusal::Swap)),
        ("Wie kann ich mein Passwort ändern?", "Wie kann ich mein altes Passwort ändern?", Err(Refusal::Wording)),
        ("如何取消我的订单", "如何取消我的订单吗", Ok(())),
        ("如何取消我的订单", "如何确认我的订单", Err(Refusal::Wording)),
    ];

    #[test]
    fn strict_table() {
        for (q, c, want) in STRICT {
            let (q, c) = (normalize(q), normalize(c));
            assert_eq!(check_strict(&q, &c), *want, "query {q:?} stored {c:?}");
            assert_eq!(
                check_strict(&c, &q),
                *want,
                "query {c:?} stored {q:?} (swapped)"
            );
        }
        // Strict never serves what the loose set refuses.
        for (q, c, want) in CASES {
            if want.is_err() {
                assert!(
                    check_strict(&normalize(q), &normalize(c)).is_err(),
                    "{q:?} / {c:?}"
                );
            }
        }
    }

    #[test]
    fn languages() {
        for (q, want) in [
            ("How do I cancel my order?", Lang::En),
            ("refund policy", Lang::En),
            ("Wie kann ich meine Bestellung stornieren?", Lang::De),
            ("¿Cómo puedo cancelar mi pedido?", Lang::Es),
            ("Comment annuler ma commande ?", Lang::Fr),
            ("如何取消我的订单", Lang::Zh),
            ("Как отменить заказ?", Lang::Other),
            ("Größe?", Lang::De),
        ] {
            assert_eq!(language(&normalize(q)), want, "{q}");
        }
    }

    #[test]
    fn words_split() {
        let w: Vec<&str> = words("don't pay $1,000.50 for c++ (3.5) e-mail 2fa, ok").collect();
        assert_eq!(
            w,
            ["don't", "pay", "1,000.50", "for", "c++", "3.5", "e", "mail", "2fa", "ok"]
        );
        assert_eq!(words("").count(), 0);
        assert_eq!(words("''' --- ...").count(), 0);
        assert_eq!(words("日本語 über").collect::<Vec<_>>(), ["日本語", "über"]);
    }

    #[test]
    fn stems() {
        for (w, want) in [
            ("shipping", "ship"),
            ("shipped", "ship"),
            ("ships", "ship"),
            ("processed", "process"),
            ("processes", "process"),
            ("process", "process"),
            ("deliveries", "deliver"),
            ("delivery", "deliver"),
            ("user's", "user"),
            ("é", "é"),
            ("", ""),
        ] {
            assert_eq!(stem(w), want, "{w}");
        }
    }

    /// `stem(stem(w)) == stem(w)` over every word of every table (and their forms).
    #[test]
    fn stemmer_is_idempotent() {
        let all = ["en", "de", "es", "fr"]
            .iter()
            .zip([
                include_str!("lang/en.tsv"),
                include_str!("lang/de.tsv"),
                include_str!("lang/es.tsv"),
                include_str!("lang/fr.tsv"),
            ])
            .flat_map(|(_, text)| lines(text).flat_map(|(_, l)| l.split_whitespace()))
            .flat_map(|w| w.split(['=', '_', '|']))
            .filter(|w| !w.is_empty());
        let mut n = 0;
        for w in all {
            for form in [
                w.to_string(),
                format!("{w}s"),
                format!("{w}ed"),
                format!("{w}ing"),
            ] {
                let once = stem(&form);
                assert_eq!(stem(once), once, "{form}");
                n += 1;
            }
        }
        assert!(n > 1000, "{n}");
    }

    #[test]
    fn near_words() {
        for (a, b, want) in [
            ("colour", "color", true),
            ("memroy", "memory", true),
            ("parcel", "parcle", true),
            ("parcel", "return", false),
            ("son", "sun", false),
            ("app", "application", true),
            ("organisation", "organization", true),
        ] {
            assert_eq!(near(a, b), want, "{a} {b}");
            assert_eq!(near(b, a), want, "{b} {a}");
        }
    }

    /// Every list name in every table is known, every antonym pair fits the u128 masks and
    /// no word is on both sides of one pair.
    #[test]
    fn tables_are_consistent() {
        for text in [
            include_str!("lang/en.tsv"),
            include_str!("lang/de.tsv"),
            include_str!("lang/es.tsv"),
            include_str!("lang/fr.tsv"),
            include_str!("lang/zh.tsv"),
        ] {
            for (name, list) in lines(text) {
                assert!(LIST_NAMES.contains(&name), "{name}");
                assert!(!list.trim().is_empty(), "{name}");
            }
        }
        let en = &tables().en;
        assert!(en.antonym_pairs <= 128);
        for (w, (a, b)) in &en.antonym {
            assert_eq!(a & b, 0, "{w} on both sides of a pair");
        }
        assert!(tables().zh.by_char && !tables().zh.negation.is_empty());
    }

    #[test]
    fn names_are_unique_and_snake_case() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            let s = r.as_str();
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(Refusal::ALL[..i].iter().all(|o| o.as_str() != s), "{s}");
            assert_eq!(Refusal::from_name(s), Some(*r));
        }
        assert_eq!(ALL, Refusal::ALL);
    }

    #[test]
    fn identical_questions_pass() {
        assert_eq!(check("", ""), Ok(()));
        assert_eq!(check("is it not free", "is it not free"), Ok(()));
    }

    #[test]
    fn too_many_words_is_refused() {
        let long = "word ".repeat(MAX_WORDS + 1);
        assert_eq!(check(&long, "word"), Err(Refusal::Length));
        assert_eq!(check("word", &long), Err(Refusal::Length));
        let ok = "word ".repeat(MAX_WORDS);
        assert_eq!(check(ok.trim_end(), "word"), Ok(()));
    }

    #[test]
    fn skipping_a_rule_lets_its_pairs_through() {
        let (q, s) = ("is shipping free", "is shipping not free");
        assert_eq!(check(q, s), Err(Refusal::Negation));
        assert_eq!(
            check_skipping(q, s, &[Refusal::Negation, Refusal::Wording]),
            Ok(())
        );
        // Strict mode names the rule that objects first; its own rule only what is left.
        assert_eq!(check_strict(q, s), Err(Refusal::Negation));
        assert_eq!(
            check_skipping(q, s, &[Refusal::Negation]),
            Err(Refusal::Wording)
        );
    }

    /// Never panics, on anything: random strings over an alphabet dense in what the word
    /// splitter and the rules look at, multi-byte characters included, raw and normalized.
    /// Symmetric verdicts, and a question always matches itself.
    #[test]
    fn hostile_inputs_never_panic() {
        let alphabet: &[&str] = &[
            "a", "9", " ", "'", ".", ",", "+", "#", "-", "n't", "not", "un", "re", "dis", "2fa",
            "enable", "disable", "canada", "their", "é", "日", "不", "\u{0301}", "\u{200B}", "💥",
            "\u{0000}", "1,", ",1", "1.", ".1", "c+", "'s", "on", "off", "two", "from", "to",
            "than", "must", "have", "nicht", "der", "ä", "ñ", "0", "00.", "я",
        ];
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut q = String::new();
            let mut c = String::new();
            for _ in 0..(next() % 20) {
                q.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            for _ in 0..(next() % 20) {
                c.push_str(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            for (q, c) in [(q.clone(), c.clone()), (normalize(&q), normalize(&c))] {
                assert_eq!(check(&q, &c), check(&c, &q), "{q:?} vs {c:?}");
                assert_eq!(check(&q, &q), Ok(()), "{q:?}");
                let strict = check_strict(&q, &c);
                assert_eq!(strict, check_strict(&c, &q), "strict: {q:?} vs {c:?}");
                assert!(check(&q, &c).is_ok() || strict.is_err(), "{q:?} vs {c:?}");
            }
        }
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = check(&s, "how do i enable 2fa");
            let _ = check_strict(&s, "how do i enable 2fa");
            let _ = check("how do i enable 2fa", &s);
        }
    }
}
