//! Guards: the checks a semantic match must pass, after the similarity threshold, before the
//! matched entry's answer may be served for another question.
//!
//! Sentence embeddings gloss over the words that change an answer: "enable 2FA" and "disable
//! 2FA", "refund within 14 days" and "within 30 days", "shipping to Canada" and "to Mexico"
//! all score close to the paraphrases we do want to serve. Each guard here looks for one
//! such difference between the two questions and refuses the match when it finds it. A
//! refusal only costs a backend call; a wrong answer costs trust, so every guard leans
//! towards refusing. What each guard costs in recall is measured in `docs/semantic.md`.
//!
//! Inputs are questions already normalized by [`crate::normalize`] (lowercase, one space
//! between words, sentence punctuation trimmed). Pure and std only: no Redis types, no
//! allocation per call (the word lists are built once), linear in the input except for
//! pairwise word comparisons, which are bounded by [`MAX_WORDS`].

use std::collections::HashMap;
use std::sync::OnceLock;

/// Why a semantic match was refused. `as_str` names appear in stats and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// One question is longer than [`MAX_WORDS`] words: too long to check cheaply, and the
    /// mean-pooled embedding of a long text hides a changed detail best.
    Length,
    /// The numbers differ (as multisets): amounts, dates, versions, `2fa`, `ipv4`.
    Number,
    /// One question is negated and the other is not (or differently often).
    Negation,
    /// One question has a word whose opposite is in the other: enable/disable, add/remove.
    Antonym,
    /// The named things differ: countries, languages, currencies, platforms, plans, months.
    Entity,
    /// One question is about a third party's thing (their, his, her), the other not.
    Ownership,
    /// Each question has a content word the other lacks (and no synonym of it): a swapped
    /// object, action or qualifier ("breakfast" / "dinner", "submit" / "approve").
    Content,
    /// One is a yes/no question and the other an open one ("Can I cancel my order?" /
    /// "How do I cancel my order?"): their answers are of different kinds.
    Form,
}

impl Refusal {
    /// Every refusal, in the order [`check`] tries them.
    pub const ALL: &'static [Refusal] = &[
        Refusal::Length,
        Refusal::Number,
        Refusal::Negation,
        Refusal::Antonym,
        Refusal::Entity,
        Refusal::Ownership,
        Refusal::Content,
        Refusal::Form,
    ];

    /// Short snake_case name, for stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Length => "length",
            Refusal::Number => "number",
            Refusal::Negation => "negation",
            Refusal::Antonym => "antonym",
            Refusal::Entity => "entity",
            Refusal::Ownership => "ownership",
            Refusal::Content => "content",
            Refusal::Form => "form",
        }
    }
}

/// The same list as [`Refusal::ALL`].
pub const ALL: &[Refusal] = Refusal::ALL;

/// Questions with more words than this are refused (see [`Refusal::Length`]).
pub const MAX_WORDS: usize = 96;

/// Most numbers (or entities) one question may carry; past it the guard cannot compare
/// without allocating, so it refuses.
const MAX_ITEMS: usize = 24;

/// Whether `candidate`'s answer may be served for `query`. Both are normalized questions
/// whose embeddings already cleared the similarity threshold. The guards run in the order
/// of [`Refusal::ALL`]; the first that objects names the refusal.
pub fn check(query: &str, candidate: &str) -> Result<(), Refusal> {
    if query == candidate {
        return Ok(());
    }
    let lex = lexicon();
    let q = Summary::of(query, lex).ok_or(Refusal::Length)?;
    let c = Summary::of(candidate, lex).ok_or(Refusal::Length)?;
    if !same_numbers(query, candidate, lex) {
        return Err(Refusal::Number);
    }
    if q.negations != c.negations {
        return Err(Refusal::Negation);
    }
    if antonyms_differ(&q, &c) || prefixed_opposite(query, candidate) {
        return Err(Refusal::Antonym);
    }
    if !same_entities(query, candidate, lex) {
        return Err(Refusal::Entity);
    }
    if q.third_party != c.third_party || !same_possessors(query, candidate, lex) {
        return Err(Refusal::Ownership);
    }
    if content_swapped(query, candidate, lex) {
        return Err(Refusal::Content);
    }
    if form(query) != form(candidate) {
        return Err(Refusal::Form);
    }
    Ok(())
}

/// The kind of answer a question asks for, from its first question word: `Some(true)` for an
/// open question (how, what, when...), `Some(false)` for a yes/no one (can, is, do...), `None`
/// when it has neither (a statement: "refund policy").
fn form(q: &str) -> Option<bool> {
    const OPEN: &[&str] = &[
        "how", "what", "what's", "whats", "which", "when", "where", "why", "who", "whom", "whose",
        "how's", "hows", "where's", "wheres", "when's", "whens", "who's", "whos",
    ];
    const CLOSED: &[&str] = &[
        "can", "could", "is", "are", "am", "was", "were", "do", "does", "did", "will", "would",
        "should", "shall", "may", "might", "must", "have", "has", "had", "isn't", "aren't",
        "don't", "doesn't", "can't", "won't", "cannot", "is it", "any",
    ];
    for w in words(q).take(MAX_WORDS) {
        if OPEN.contains(&w) {
            return Some(true);
        }
        if CLOSED.contains(&w) {
            return Some(false);
        }
    }
    None
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

// ---------------------------------------------------------------------------------------
// Word lists

/// What the guards know about one word.
#[derive(Default, Clone, Copy)]
struct Entry {
    negation: bool,
    third_party: bool,
    /// A number word's digits (`two` is `2`).
    number: Option<&'static str>,
    /// Bit i: the word is on the first side of antonym pair i.
    side_a: u128,
    /// Bit i: the word is on the second side of antonym pair i.
    side_b: u128,
    /// Entity group (aliases share one), if the word names a thing.
    entity: Option<u16>,
    /// A function word: not content.
    stop: bool,
    /// The stem standing for this word's synonym group.
    synonym: Option<&'static str>,
}

struct Lexicon {
    map: HashMap<&'static str, Entry>,
    /// Antonym pairs that qualify rather than act (`new`, `minimum`, `all`): a question may
    /// add one of their words and still be the same question.
    qualifiers: u128,
}

impl Lexicon {
    fn get(&self, word: &str) -> Option<&Entry> {
        self.map.get(word)
    }

    /// `word`, or failing that its form without a possessive `'s` or a plural `s`.
    fn get_loose(&self, word: &str) -> Option<&Entry> {
        self.get(word)
            .or_else(|| self.get(base(word)))
            .or_else(|| word.strip_suffix('s').and_then(|w| self.get(w)))
    }
}

fn lexicon() -> &'static Lexicon {
    static LEX: OnceLock<Lexicon> = OnceLock::new();
    LEX.get_or_init(build_lexicon)
}

fn build_lexicon() -> Lexicon {
    let mut map: HashMap<&'static str, Entry> = HashMap::new();
    for w in NEGATIONS {
        map.entry(w).or_default().negation = true;
    }
    for w in THIRD_PARTY {
        map.entry(w).or_default().third_party = true;
    }
    for (w, n) in NUMBER_WORDS {
        map.entry(w).or_default().number = Some(n);
    }
    for (i, (a, b)) in ANTONYMS.iter().enumerate() {
        for w in *a {
            map.entry(w).or_default().side_a |= 1 << i;
        }
        for w in *b {
            map.entry(w).or_default().side_b |= 1 << i;
        }
    }
    for (i, group) in ENTITIES.iter().enumerate() {
        for w in *group {
            map.entry(w).or_default().entity = Some(i as u16);
        }
    }
    for w in STOPWORDS {
        map.entry(w).or_default().stop = true;
    }
    for group in SYNONYMS {
        let key = stem(group[0]);
        for w in *group {
            // Keyed by stem too, so that inflected forms find their group.
            map.entry(w).or_default().synonym = Some(key);
            map.entry(stem(w)).or_default().synonym = Some(key);
        }
    }
    let mut qualifiers = 0;
    for (i, (a, _)) in ANTONYMS.iter().enumerate() {
        if a.iter().any(|w| QUALIFIER_PAIRS.contains(w)) {
            qualifiers |= 1 << i;
        }
    }
    Lexicon { map, qualifiers }
}

/// Words that negate. `n't` contractions are recognized by their ending; the forms without
/// an apostrophe are typed often enough to be listed.
const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without",
    "cannot", "unable", "non", "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent",
    "cant", "wont", "couldnt", "shouldnt", "wouldnt", "havent", "hasnt", "hadnt", "mustnt",
];

/// Words that put the question on someone else's thing.
#[rustfmt::skip]
const THIRD_PARTY: &[&str] = &[
    "their", "theirs", "his", "her", "hers", "him", "he", "she", "else", "else's",
    "someone's", "somebody's",
];

/// Number words, compared as the digits they stand for. `one` is left out: it is far more
/// often a pronoun ("which one") than a count.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("fifteen", "15"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("fifty", "50"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("dozen", "12"),
    ("first", "1st"),
    ("second", "2nd"),
    ("third", "3rd"),
    ("fourth", "4th"),
    ("fifth", "5th"),
    ("twice", "2x"),
    ("double", "2x"),
];

/// Antonym pairs. A match is refused when one question has a word of one side (and none of
/// the other) while the other question has a word of the other side (and none of the
/// first). Listed as word forms, not stems, so that nothing matches by accident; each pair
/// is narrow so that unrelated words on one side cannot cancel each other out.
const ANTONYMS: &[(&[&str], &[&str])] = &[
    (
        &["enable", "enables", "enabled", "enabling"],
        &["disable", "disables", "disabled", "disabling"],
    ),
    (
        &[
            "activate",
            "activates",
            "activated",
            "activating",
            "activation",
        ],
        &[
            "deactivate",
            "deactivates",
            "deactivated",
            "deactivating",
            "deactivation",
        ],
    ),
    (&["on"], &["off"]),
    (
        &[
            "start",
            "starts",
            "started",
            "starting",
            "begin",
            "begins",
            "beginning",
        ],
        &[
            "stop",
            "stops",
            "stopped",
            "stopping",
            "end",
            "ends",
            "ended",
            "ending",
            "halt",
            "terminate",
            "terminated",
        ],
    ),
    (
        &["resume", "resumes", "resumed", "unpause", "restart"],
        &["pause", "paused", "pausing", "suspend", "suspended"],
    ),
    (
        &["open", "opens", "opened", "opening"],
        &["close", "closes", "closed", "closing", "shut"],
    ),
    (&["unlock", "unlocked"], &["lock", "locked"]),
    (
        &[
            "add", "adds", "added", "adding", "insert", "create", "creates", "created", "creating",
        ],
        &[
            "remove", "removes", "removed", "removing", "delete", "deletes", "deleted", "deleting",
            "erase",
        ],
    ),
    (
        &["include", "includes", "included", "including"],
        &["exclude", "excludes", "excluded", "excluding"],
    ),
    (
        &["install", "installs", "installed", "installing"],
        &["uninstall", "uninstalls", "uninstalled", "uninstalling"],
    ),
    (
        &[
            "increase",
            "increases",
            "increased",
            "increasing",
            "raise",
            "raised",
            "raising",
            "extend",
            "extended",
        ],
        &[
            "decrease",
            "decreases",
            "decreased",
            "decreasing",
            "reduce",
            "reduced",
            "reducing",
            "lower",
            "shorten",
        ],
    ),
    (&["more"], &["less", "fewer"]),
    (&["high", "higher", "highest"], &["low", "lower", "lowest"]),
    (&["max", "maximum"], &["min", "minimum"]),
    (&["most"], &["least"]),
    (&["over", "above"], &["under", "below"]),
    (&["up"], &["down"]),
    (
        &["upgrade", "upgrades", "upgraded", "upgrading"],
        &["downgrade", "downgrades", "downgraded", "downgrading"],
    ),
    (
        &["upload", "uploads", "uploaded", "uploading"],
        &["download", "downloads", "downloaded", "downloading"],
    ),
    (&["plus"], &["minus"]),
    (&["before", "prior", "within"], &["after", "beyond"]),
    (
        &["early", "earlier", "earliest"],
        &["late", "later", "latest"],
    ),
    (
        &["previous", "past", "last"],
        &["next", "following", "future", "upcoming"],
    ),
    (&["yesterday"], &["tomorrow"]),
    (&["am", "morning"], &["pm", "evening", "night"]),
    (&["old", "older", "oldest"], &["new", "newer", "newest"]),
    (
        &["buy", "buys", "buying", "bought", "buyer", "buyers"],
        &["sell", "sells", "selling", "sold", "seller", "sellers"],
    ),
    (
        &["import", "imports", "imported", "importing"],
        &["export", "exports", "exported", "exporting"],
    ),
    (
        &["in", "into", "inside", "inbound", "incoming"],
        &["out", "outside", "outbound", "outgoing"],
    ),
    (
        &["login", "signin", "checkin"],
        &["logout", "signout", "checkout"],
    ),
    (
        &[
            "encrypt",
            "encrypts",
            "encrypted",
            "encrypting",
            "encryption",
        ],
        &[
            "decrypt",
            "decrypts",
            "decrypted",
            "decrypting",
            "decryption",
        ],
    ),
    (
        &["compress", "compressed", "zip", "zipped"],
        &["decompress", "decompressed", "unzip", "unzipped", "extract"],
    ),
    (
        &[
            "allow",
            "allows",
            "allowed",
            "allowing",
            "permit",
            "permitted",
            "whitelist",
            "allowlist",
            "unblock",
            "unblocked",
        ],
        &[
            "block",
            "blocks",
            "blocked",
            "blocking",
            "forbid",
            "forbidden",
            "prohibit",
            "prohibited",
            "blacklist",
            "blocklist",
            "ban",
            "banned",
        ],
    ),
    (
        &[
            "accept",
            "accepts",
            "accepted",
            "accepting",
            "approve",
            "approves",
            "approved",
            "approval",
            "grant",
            "granted",
        ],
        &[
            "reject",
            "rejects",
            "rejected",
            "rejecting",
            "rejection",
            "decline",
            "declines",
            "declined",
            "declining",
            "deny",
            "denies",
            "denied",
            "revoke",
            "revoked",
        ],
    ),
    (
        &["send", "sends", "sending", "sent", "sender"],
        &[
            "receive",
            "receives",
            "received",
            "receiving",
            "recipient",
            "receiver",
        ],
    ),
    (
        &["lend", "lending", "lender"],
        &["borrow", "borrowing", "borrower"],
    ),
    (
        &["deposit", "deposits", "deposited"],
        &["withdraw", "withdrawal", "withdrawals", "withdrawn"],
    ),
    (
        &["credit", "credited", "credits"],
        &["debit", "debited", "debits"],
    ),
    (&["income"], &["expense", "expenses"]),
    (&["gain", "gains", "profit"], &["loss", "losses"]),
    (
        &["arrive", "arrives", "arrival", "arrivals", "arriving"],
        &["depart", "departs", "departure", "departures", "departing"],
    ),
    (&["pickup"], &["dropoff"]),
    (
        &["join", "joins", "joining", "joined"],
        &["leave", "leaves", "leaving", "quit"],
    ),
    (
        &["hire", "hired", "hiring", "onboarding", "onboard"],
        &["fire", "fired", "firing", "offboarding", "offboard"],
    ),
    (
        &["subscribe", "subscribes", "subscribed", "subscribing"],
        &[
            "unsubscribe",
            "unsubscribes",
            "unsubscribed",
            "unsubscribing",
        ],
    ),
    (
        &[
            "renew",
            "renews",
            "renewed",
            "renewal",
            "renewing",
            "book",
            "booked",
            "reactivate",
            "confirm",
            "confirmed",
            "keep",
            "place",
            "placed",
            "subscribe",
            "subscribed",
        ],
        &[
            "cancel",
            "cancels",
            "canceled",
            "cancelled",
            "canceling",
            "cancelling",
            "cancellation",
            "void",
            "voided",
        ],
    ),
    (&["public"], &["private"]),
    (
        &["visible", "show", "shows", "shown", "unhide"],
        &["invisible", "hidden", "hide", "hides"],
    ),
    (&["online"], &["offline"]),
    (&["external"], &["internal"]),
    (
        &["international", "abroad", "overseas", "foreign"],
        &["domestic", "local", "national"],
    ),
    (&["employer", "employers"], &["employee", "employees"]),
    (&["landlord", "landlords"], &["tenant", "tenants"]),
    (
        &["parent", "parents", "adult", "adults"],
        &["child", "children", "kid", "kids", "minor", "minors"],
    ),
    (
        &["male", "men", "man", "husband"],
        &["female", "women", "woman", "wife"],
    ),
    (
        &[
            "admin",
            "admins",
            "administrator",
            "administrators",
            "owner",
            "owners",
            "manager",
            "managers",
        ],
        &["member", "members", "user", "users", "guest", "guests"],
    ),
    (&["cheap", "cheaper", "cheapest"], &["expensive"]),
    (
        &["fast", "faster", "fastest", "quick", "quicker", "quickest"],
        &["slow", "slower", "slowest"],
    ),
    (
        &["short", "shorter", "shortest"],
        &["long", "longer", "longest"],
    ),
    (
        &["small", "smaller", "smallest"],
        &["large", "larger", "largest", "big", "bigger", "biggest"],
    ),
    (&["full"], &["part", "partial"]),
    (&["valid"], &["invalid"]),
    (&["correct", "right"], &["incorrect", "wrong"]),
    (&["true"], &["false"]),
    (
        &[
            "success",
            "successful",
            "succeed",
            "succeeded",
            "pass",
            "passed",
        ],
        &["failure", "fail", "fails", "failed", "failing"],
    ),
    (&["win"], &["lose"]),
    (&["positive"], &["negative"]),
    (&["paid"], &["unpaid"]),
    (&["legal"], &["illegal"]),
    (
        &[
            "refund",
            "refunds",
            "refunded",
            "refunding",
            "reimburse",
            "reimbursed",
            "reimbursement",
        ],
        &[
            "charge",
            "charges",
            "charged",
            "charging",
            "surcharge",
            "penalty",
            "billed",
        ],
    ),
    (
        &["merge", "merged", "merging", "combine"],
        &["split", "splitting", "separate"],
    ),
    (
        &[
            "link",
            "linked",
            "linking",
            "connect",
            "connected",
            "connecting",
            "attach",
        ],
        &[
            "unlink",
            "unlinked",
            "unlinking",
            "disconnect",
            "disconnected",
            "disconnecting",
            "detach",
        ],
    ),
    (
        &["follow", "follows", "followed"],
        &["unfollow", "unfollowed"],
    ),
    (&["mute", "muted"], &["unmute", "unmuted"]),
    (&["freeze", "frozen"], &["unfreeze", "unfrozen"]),
    (&["archive", "archived"], &["unarchive", "unarchived"]),
    (&["publish", "published"], &["unpublish", "unpublished"]),
    (&["push"], &["pull"]),
    (&["to", "towards"], &["from"]),
    (&["ascending", "asc"], &["descending", "desc"]),
    (&["all", "every"], &["one", "single", "specific"]),
];

/// Things that are named: a question about one is not a question about another. Each inner
/// list is one thing under its aliases.
#[rustfmt::skip]
const ENTITIES: &[&[&str]] = &[
    // Countries and regions.
    &["us", "usa", "america", "american", "states"],
    &["canada", "canadian"],
    &["mexico", "mexican"],
    &["uk", "britain", "british", "england", "english"],
    &["ireland", "irish"],
    &["france", "french"],
    &["germany", "german"],
    &["spain", "spanish"],
    &["italy", "italian"],
    &["portugal", "portuguese"],
    &["netherlands", "dutch", "holland"],
    &["belgium"],
    &["switzerland", "swiss"],
    &["austria"],
    &["sweden", "swedish"],
    &["norway", "norwegian"],
    &["denmark", "danish"],
    &["finland", "finnish"],
    &["poland", "polish"],
    &["greece", "greek"],
    &["turkey", "turkish"],
    &["russia", "russian"],
    &["ukraine", "ukrainian"],
    &["china", "chinese", "mandarin"],
    &["japan", "japanese"],
    &["korea", "korean"],
    &["india", "indian", "hindi"],
    &["australia", "australian"],
    &["zealand"],
    &["brazil", "brazilian"],
    &["argentina"],
    &["chile"],
    &["colombia"],
    &["peru"],
    &["egypt"],
    &["nigeria"],
    &["kenya"],
    &["africa", "african"],
    &["europe", "european", "eu"],
    &["asia", "asian"],
    &["singapore"],
    &["thailand", "thai"],
    &["vietnam", "vietnamese"],
    &["indonesia", "indonesian"],
    &["philippines"],
    &["israel", "hebrew"],
    &["uae", "dubai"],
    &["arabic", "arabia"],
    &["california"],
    &["texas"],
    &["york"],
    &["london"],
    &["paris"],
    &["berlin"],
    &["tokyo"],
    &["hawaii"],
    &["alaska"],
    &["puerto"],
    &["quebec"],
    &["ontario"],
    // Currencies.
    &["usd", "dollar", "dollars"],
    &["eur", "euro", "euros"],
    &["gbp", "pound", "pounds", "sterling"],
    &["jpy", "yen"],
    &["inr", "rupee", "rupees"],
    &["cad"],
    &["aud"],
    &["chf", "franc", "francs"],
    &["bitcoin", "btc"],
    &["ethereum", "eth"],
    &["crypto", "cryptocurrency"],
    // Months, days, seasons.
    &["january", "jan"],
    &["february", "feb"],
    &["march", "mar"],
    &["april", "apr"],
    &["june", "jun"],
    &["july", "jul"],
    &["august", "aug"],
    &["september", "sep", "sept"],
    &["october", "oct"],
    &["november", "nov"],
    &["december", "dec"],
    &["monday", "mon"],
    &["tuesday", "tue"],
    &["wednesday", "wed"],
    &["thursday", "thu"],
    &["friday", "fri"],
    &["saturday", "sat"],
    &["sunday", "sun"],
    &["weekend", "weekends"],
    &["weekday", "weekdays"],
    &["holiday", "holidays"],
    &["christmas"],
    &["summer"],
    &["winter"],
    &["spring"],
    &["autumn"],
    // Platforms, devices, browsers, software.
    &["windows"],
    &["mac", "macos", "macbook", "osx"],
    &["linux", "ubuntu", "debian"],
    &["ios", "iphone", "ipad", "apple"],
    &["android", "samsung", "pixel"],
    &["chrome", "chromebook"],
    &["firefox"],
    &["safari"],
    &["edge"],
    &["outlook"],
    &["gmail", "google"],
    &["slack"],
    &["zoom"],
    &["excel", "xlsx"],
    &["csv"],
    &["pdf"],
    &["json"],
    &["xml"],
    &["docx"],
    &["desktop"],
    &["mobile", "phone", "smartphone"],
    &["tablet"],
    &["web", "browser", "website"],
    &["tv"],
    &["aws", "amazon"],
    &["azure", "microsoft"],
    &["gcp"],
    &["github"],
    &["gitlab"],
    &["sso", "saml"],
    &["ldap"],
    &["api"],
    &["cli"],
    &["sms", "text"],
    &["email", "mail"],
    &["whatsapp"],
    &["facebook"],
    &["instagram"],
    &["twitter"],
    &["linkedin"],
    // Programming languages.
    &["python"],
    &["java"],
    &["javascript", "js", "node", "nodejs"],
    &["typescript", "ts"],
    &["rust"],
    &["golang"],
    &["ruby"],
    &["php"],
    &["c++", "cpp"],
    &["c#", "csharp", "dotnet"],
    &["swift"],
    &["kotlin"],
    // Plans, tiers, classes, sizes.
    &["free"],
    &["basic"],
    &["standard"],
    &["premium"],
    &["pro", "professional"],
    &["plus"],
    &["business"],
    &["enterprise"],
    &["starter"],
    &["family"],
    &["student", "students"],
    &["individual"],
    &["trial"],
    &["economy"],
    &["gold"],
    &["silver"],
    &["platinum"],
    &["bronze"],
    &["medium"],
    // Payment and carriers.
    &["visa"],
    &["mastercard"],
    &["amex"],
    &["discover"],
    &["paypal"],
    &["venmo"],
    &["stripe"],
    &["klarna"],
    &["cash"],
    &["cheque"],
    &["wire"],
    &["ups"],
    &["fedex"],
    &["dhl"],
    &["usps"],
    // Insurance and health.
    &["dental", "dentist"],
    &["vision", "eye", "glasses", "optical"],
    &["medical"],
    &["mental", "therapy", "therapist"],
    &["prescription", "prescriptions", "drug", "drugs", "pharmacy"],
    &["maternity", "pregnancy"],
    &["hospital"],
    &["emergency"],
    &["ambulance"],
    &["pet", "pets"],
    &["dog", "dogs"],
    &["cat", "cats"],
    &["breakfast"],
    &["lunch"],
    &["dinner"],
    // Units.
    &["kb"],
    &["mb"],
    &["gb"],
    &["tb"],
    &["ml"],
    &["kg", "kilo", "kilos"],
    &["lb", "lbs"],
    &["km"],
    &["miles"],
    &["car", "cars", "vehicle", "auto"],
    &["home", "house"],
    &["life"],
    // HR.
    &["sick"],
    &["vacation", "pto"],
    &["parental", "paternity"],
    &["bereavement"],
    &["jury"],
    &["remote"],
    &["bonus", "bonuses"],
    &["salary", "salaries", "wage", "wages"],
    &["401k", "pension", "retirement"],
    &["overtime"],
    &["contractor", "contractors", "freelancer"],
    &["intern", "interns", "internship"],
    // Travel.
    &["flight", "flights", "plane", "airline"],
    &["train", "trains", "rail"],
    &["bus", "buses"],
    &["hotel", "hotels"],
    &["rental"],
    &["cruise"],
    &["baggage", "luggage", "bag", "bags", "suitcase"],
    &["seat", "seats"],
    &["passport"],
];

// ---------------------------------------------------------------------------------------
// The guards

/// Per-question facts gathered in one pass.
struct Summary {
    negations: u32,
    third_party: bool,
    side_a: u128,
    side_b: u128,
}

impl Summary {
    /// `None` when the question has more than [`MAX_WORDS`] words.
    fn of(q: &str, lex: &Lexicon) -> Option<Summary> {
        let mut s = Summary {
            negations: 0,
            third_party: false,
            side_a: 0,
            side_b: 0,
        };
        if words(q).nth(MAX_WORDS).is_some() {
            return None;
        }
        for w in terms(q) {
            if w.ends_with("n't") {
                s.negations += 1;
                continue;
            }
            if let Some(e) = lex.get(w).or_else(|| lex.get(base(w))) {
                s.negations += u32::from(e.negation);
                s.third_party |= e.third_party;
                s.side_a |= e.side_a;
                s.side_b |= e.side_b;
            }
        }
        Some(s)
    }
}

/// A word is numeric if it has a digit (`30`, `3.5`, `2fa`, `ipv6`, `5pm`) or is a number
/// word; its value is the word without thousands separators, or the number word's digits.
fn numeric(word: &str, lex: &Lexicon) -> Option<&'static str> {
    lex.get(word).and_then(|e| e.number)
}

fn num_eq(a: &str, b: &str) -> bool {
    fn digits(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().filter(|b| *b != b',')
    }
    a == b || digits(a).eq(digits(b))
}

/// Collects a question's numbers into `out`; `None` if there are more than fit.
fn collect_numbers<'a>(q: &'a str, lex: &Lexicon, out: &mut [&'a str; MAX_ITEMS]) -> Option<usize> {
    let mut n = 0;
    for w in words(q).take(MAX_WORDS) {
        let value = if w.bytes().any(|b| b.is_ascii_digit()) {
            w
        } else if let Some(v) = numeric(w, lex) {
            v
        } else {
            continue;
        };
        *out.get_mut(n)? = value;
        n += 1;
    }
    Some(n)
}

/// The two questions carry the same numbers, counted with multiplicity.
fn same_numbers(q: &str, c: &str, lex: &Lexicon) -> bool {
    let (mut a, mut b) = ([""; MAX_ITEMS], [""; MAX_ITEMS]);
    let (Some(na), Some(nb)) = (
        collect_numbers(q, lex, &mut a),
        collect_numbers(c, lex, &mut b),
    ) else {
        return false;
    };
    if na != nb {
        return false;
    }
    let (a, b) = (&a[..na], &b[..nb]);
    a.iter().all(|x| {
        let in_a = a.iter().filter(|y| num_eq(x, y)).count();
        let in_b = b.iter().filter(|y| num_eq(x, y)).count();
        in_a == in_b
    })
}

/// Some antonym pair has one side only in one question and the other side only in the
/// other.
fn antonyms_differ(q: &Summary, c: &Summary) -> bool {
    let forward = q.side_a & !c.side_a & c.side_b & !q.side_b;
    let backward = q.side_b & !c.side_b & c.side_a & !q.side_a;
    forward | backward != 0
}

/// Prefixes that turn a word into its opposite or into another action: `lock`/`unlock`,
/// `connect`/`disconnect`, `activate`/`reactivate`, `valid`/`invalid`.
const OPPOSITE_PREFIXES: &[&str] = &["un", "dis", "non", "de", "re", "in", "im", "il", "ir"];

/// One question has `prefix + w` (and not `w`) where the other has `w` (and not
/// `prefix + w`).
fn prefixed_opposite(q: &str, c: &str) -> bool {
    one_way_prefixed(q, c) || one_way_prefixed(c, q)
}

fn one_way_prefixed(q: &str, c: &str) -> bool {
    for w in words(q).take(MAX_WORDS) {
        for p in OPPOSITE_PREFIXES {
            let Some(root) = w.strip_prefix(p) else {
                continue;
            };
            // Short roots match by accident (`unit`, `debit`).
            if root.chars().count() < 4 {
                continue;
            }
            let c_has_root = words(c).take(MAX_WORDS).any(|x| x == root);
            if !c_has_root {
                continue;
            }
            let q_has_root = words(q).take(MAX_WORDS).any(|x| x == root);
            let c_has_word = words(c).take(MAX_WORDS).any(|x| x == w);
            if !q_has_root && !c_has_word {
                return true;
            }
        }
    }
    false
}

/// Collects a question's entity groups into `out`; `None` if there are more than fit.
fn collect_entities(q: &str, lex: &Lexicon, out: &mut [u16; MAX_ITEMS]) -> Option<usize> {
    let mut n = 0;
    for w in words(q).take(MAX_WORDS) {
        let Some(id) = lex.get_loose(w).and_then(|e| e.entity) else {
            continue;
        };
        if out[..n].contains(&id) {
            continue;
        }
        *out.get_mut(n)? = id;
        n += 1;
    }
    Some(n)
}

/// The two questions name the same set of things.
fn same_entities(q: &str, c: &str, lex: &Lexicon) -> bool {
    let (mut a, mut b) = ([0u16; MAX_ITEMS], [0u16; MAX_ITEMS]);
    let (Some(na), Some(nb)) = (
        collect_entities(q, lex, &mut a),
        collect_entities(c, lex, &mut b),
    ) else {
        return false;
    };
    na == nb && a[..na].iter().all(|x| b[..nb].contains(x))
}

/// Function words, politeness and verbs too general to change an answer: what is left of a
/// question without them is its content.
#[rustfmt::skip]
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "mine", "myself", "we", "us", "our", "ours", "you",
    "your", "yours", "it", "its", "this", "that", "these", "those", "there", "here", "do",
    "does", "did", "doing", "done", "is", "are", "was", "were", "be", "been", "being", "am",
    "have", "has", "had", "having", "can", "could", "will", "would", "should", "shall",
    "might", "must", "need", "needs", "want", "wants", "like", "what", "which", "who", "whom",
    "whose", "when", "where", "why", "how", "for", "of", "at", "by", "with", "about", "as",
    "than", "per", "via", "and", "or", "but", "if", "so", "then", "also", "just", "please",
    "thanks", "thank", "hi", "hello", "hey", "possible", "way", "able", "any", "some",
    "anything", "something", "know", "tell", "let", "go", "i'm", "i've", "i'd", "i'll",
    "you're", "we're", "it's", "that's", "there's", "what's", "how's", "where's", "usually",
    "actually", "really", "exactly", "currently", "still", "ever", "again", "too", "very",
    "much", "many", "long", "get", "got", "getting", "make", "use", "using", "be", "happen",
    "happens", "is", "mean", "means", "work", "works", "required", "require", "allowed",
    "available", "option", "options", "should", "okay", "ok", "wondering", "question",
    "help", "permanently", "anyone", "somehow", "kind", "sort", "to", "from", "in", "on",
    "into", "out", "off", "up", "over", "onto", "turn", "used", "different", "another",
    "other", "someone", "somebody",
];

/// Synonym groups of the support vocabulary; the first word names the group. Single words
/// only (a multi-word synonym, "money back" for "refund", is left to the refusal).
#[rustfmt::skip]
const SYNONYMS: &[&[&str]] = &[
    &["change", "update", "modify", "edit", "alter"],
    &["order", "purchase", "buy", "bought"],
    &["ship", "shipping", "deliver", "delivery", "shipment"],
    &["transfer", "send"],
    &["find", "see", "view", "check", "locate", "show"],
    &["cost", "price", "pricing", "charge", "fee", "rate"],
    &["delete", "remove", "erase"],
    &["create", "make", "generate", "open"],
    &["contact", "reach", "call", "ask"],
    &["photo", "picture", "image", "avatar"],
    &["teammate", "colleague", "coworker"],
    &["document", "doc", "file"],
    &["receive", "arrive", "come"],
    &["enroll", "register", "signup"],
    &["login", "signin"],
    &["logout", "signout"],
    &["enable", "activate"],
    &["disable", "deactivate"],
    &["bill", "invoice", "statement", "receipt"],
    &["accept", "take", "support", "allow", "permit", "pay"],
    &["app", "application"],
    &["docs", "documentation", "guide"],
    &["configure", "setup", "set"],
    &["problem", "issue", "error", "trouble"],
    &["slow", "slowly", "lag", "laggy"],
    &["choose", "select", "pick"],
    &["recover", "restore", "undo"],
    &["exceed", "over"],
    &["allowance", "limit"],
    &["payslip", "paystub", "stub"],
    &["begin", "start"],
    &["day", "days", "daily"],
    &["week", "weeks", "weekly"],
    &["month", "months", "monthly"],
    &["year", "years", "yearly", "annual", "annually"],
    &["hour", "hours", "hourly"],
    &["physical", "checkup"],
    &["submit", "file"],
    &["company", "organization", "org"],
    &["data", "information", "info", "details"],
    &["wifi", "wireless", "internet"],
    &["carrier", "provider"],
    &["number", "phone"],
    &["baggage", "luggage", "bag"],
    &["require", "need"],
    &["cancel", "cancelled", "canceled", "cancellation"],
    &["child", "children", "kid", "kids"],
    &["finish", "finished", "finishing", "complete", "completed", "completion"],
    &["booking", "reservation", "book", "reserve"],
    &["visit", "travel"],
    &["all", "every", "each"],
    &["withdraw", "withdrawal"],
    &["multiple", "several"],
    &["rollover", "carryover"],
];

/// A light stemmer that only ever returns a prefix of its input (no allocation): drops a
/// possessive, then one of `ing`/`ed`/`es`/`s`/`ly`/`e`, and a doubled final consonant
/// (`shipping`, `shipped` and `ships` are all `ship`).
fn stem(word: &str) -> &str {
    let once = stem_once(base(word));
    stem_once(once)
}

fn stem_once(w: &str) -> &str {
    let mut s = w;
    for suffix in ["ies", "ing", "ed", "es", "s", "ly", "y", "e"] {
        if let Some(rest) = w.strip_suffix(suffix) {
            if rest.chars().count() >= 3 {
                s = rest;
                break;
            }
        }
    }
    let b = s.as_bytes();
    if s.len() < w.len() && b.len() >= 4 {
        let (x, y) = (b[b.len() - 1], b[b.len() - 2]);
        if x == y && x.is_ascii_lowercase() && !b"aeiouls".contains(&x) {
            return &s[..s.len() - 1];
        }
    }
    s
}

/// The content of one word: `None` for a function word or a negation (its own guard
/// compares those), else its synonym group or its stem.
fn content_key<'a>(w: &'a str, lex: &'static Lexicon) -> Option<&'a str> {
    // Numbers and negations have their own guards.
    if w.ends_with("n't") || w.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(e) = lex.get(w).or_else(|| lex.get(base(w))) {
        if e.stop || e.negation || e.number.is_some() {
            return None;
        }
        if let Some(key) = e.synonym {
            return Some(key);
        }
    }
    if let Some(id) = lex.get_loose(w).and_then(|e| e.entity) {
        return ENTITIES
            .get(usize::from(id))
            .and_then(|g| g.first().copied());
    }
    let s = stem(w);
    match lex.get(s) {
        Some(e) if e.stop => None,
        Some(e) => Some(e.synonym.unwrap_or(s)),
        None => Some(s),
    }
}

/// The query has a content word (up to synonyms and inflection) that the stored question
/// lacks, or either has an extra action word. The stored question may add detail (a
/// paraphrase often spells more out); the query may not (it would get a general answer).
fn content_swapped(q: &str, c: &str, lex: &'static Lexicon) -> bool {
    let has = |text: &str, key: &str| terms(text).any(|w| content_key(w, lex) == Some(key));
    // The first content word of `a` missing from `b`, and whether it is an action word
    // (one with an antonym: "cancel", "add", "new").
    let extra = |a: &str, b: &str| {
        let mut found = (false, false);
        for k in terms(a).filter_map(|w| content_key(w, lex)) {
            if !has(b, k) {
                found.0 = true;
                let e = lex.get(k);
                found.1 |= e.is_some_and(|e| (e.side_a | e.side_b) & !lex.qualifiers != 0);
            }
        }
        found
    };
    let (q_extra, q_action) = extra(q, c);
    let (_, c_action) = extra(c, q);
    // A query more specific than the stored question ("express shipping" / "shipping",
    // "encrypted at rest" / "encrypted") would get the general answer: refused. The stored
    // question may be the more detailed one.
    q_extra || q_action || c_action || !same_same(q, c, lex)
}

/// Antonym pairs (named by a word of their first side) whose words qualify a question
/// rather than change its action.
const QUALIFIER_PAIRS: &[&str] = &[
    "more", "high", "max", "most", "over", "old", "all", "short", "small", "cheap", "fast", "full",
    "previous", "early", "before",
];

/// Whose thing it is: when one question has `X's` and the other has the same `X` without
/// the possessive (and not as "... of the X"), X plays another role in each: "can my manager
/// see my review" is not "can I see my manager's review". A possessor the other question
/// does not mention at all is an added detail ("the firmware", "my device's firmware").
fn same_possessors(q: &str, c: &str, lex: &'static Lexicon) -> bool {
    fn role_swapped(a: &str, b: &str, lex: &'static Lexicon) -> bool {
        words(a)
            .take(MAX_WORDS)
            .filter(|w| w.ends_with("'s"))
            .filter_map(|w| content_key(w, lex))
            .any(|k| {
                let mut recent = ["", ""];
                let mut plain = false;
                let mut possessive = false;
                for x in words(b).take(MAX_WORDS) {
                    if content_key(x, lex) == Some(k) {
                        if x.ends_with("'s") {
                            possessive = true;
                        } else if !recent.contains(&"of") {
                            plain = true;
                        }
                    }
                    recent = [recent[1], x];
                }
                plain && !possessive
            })
    }
    !role_swapped(q, c, lex) && !role_swapped(c, q, lex)
}

/// When both questions say "same", the same thing follows it: "the same account on several
/// devices" is not "several accounts on the same device".
fn same_same(q: &str, c: &str, lex: &'static Lexicon) -> bool {
    fn after_same<'a>(text: &'a str, lex: &'static Lexicon) -> Option<Option<&'a str>> {
        let mut prev = "";
        for w in words(text).take(MAX_WORDS) {
            if prev == "same" {
                return Some(content_key(w, lex));
            }
            prev = w;
        }
        None
    }
    match (after_same(q, lex), after_same(c, lex)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Two-word verbs that mean one thing: `log in`, `turn on`, `sign up`.
const PHRASES: &[(&[&str], &[&str], &str)] = &[
    (
        &[
            "log", "logs", "logged", "logging", "sign", "signed", "signing",
        ],
        &["in", "on", "into"],
        "login",
    ),
    (
        &[
            "log", "logs", "logged", "logging", "sign", "signed", "signing",
        ],
        &["out", "off"],
        "logout",
    ),
    (&["sign", "signed", "signing"], &["up"], "signup"),
    (
        &[
            "turn",
            "turns",
            "turned",
            "turning",
            "switch",
            "switched",
            "switching",
        ],
        &["on"],
        "enable",
    ),
    (
        &[
            "turn",
            "turns",
            "turned",
            "turning",
            "switch",
            "switched",
            "switching",
        ],
        &["off"],
        "disable",
    ),
    (&["set", "sets", "setting"], &["up"], "setup"),
    (&["pick", "picked", "picking"], &["up"], "pickup"),
    (&["check", "checked", "checking"], &["in"], "checkin"),
    (&["check", "checked", "checking"], &["out"], "checkout"),
    (
        &["roll", "rolls", "rolled", "carry", "carried", "carries"],
        &["over"],
        "rollover",
    ),
    (
        &["team"],
        &["member", "members", "mate", "mates"],
        "teammate",
    ),
];

/// The words of a question with each two-word verb of [`PHRASES`] made one term.
fn terms(s: &str) -> impl Iterator<Item = &str> {
    let mut it = words(s).take(MAX_WORDS).peekable();
    std::iter::from_fn(move || {
        let w = it.next()?;
        let next = it.peek().copied();
        for (heads, tails, term) in PHRASES {
            if heads.contains(&w) && next.is_some_and(|n| tails.contains(&n)) {
                it.next();
                return Some(*term);
            }
        }
        Some(w)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn run(q: &str, c: &str) -> Result<(), Refusal> {
        check(&normalize(q), &normalize(c))
    }

    /// (query, candidate, expected): rows grouped by guard, a served paraphrase next to each
    /// refusal so a guard that refuses everything fails too.
    #[rustfmt::skip]
    const CASES: &[(&str, &str, Result<(), Refusal>)] = &[
        // Paraphrases pass.
        ("What is our refund policy?", "What is your refund policy?", Ok(())),
        ("How do I reset my password?", "How can I reset my password", Ok(())),
        ("how do i change my email address", "How can I update my email address?", Ok(())),
        // Numbers: values, decimals, alphanumerics, number words, multiplicity.
        ("Refund within 14 days?", "Refund within 30 days?", Err(Refusal::Number)),
        ("Is version 3.5 supported?", "Is version 35 supported?", Err(Refusal::Number)),
        ("How do I set up 2FA?", "How do I set up MFA?", Err(Refusal::Number)),
        ("Does it support IPv4?", "Does it support IPv6?", Err(Refusal::Number)),
        ("Can I add two users?", "Can I add 2 users?", Ok(())),
        ("Can I add two users?", "Can I add three users?", Err(Refusal::Number)),
        ("Is 1,000 the limit?", "Is 1000 the limit?", Ok(())),
        ("Price of 5 or 5 seats?", "Price of 5 seats?", Err(Refusal::Number)),
        ("Meeting at 5pm?", "Meeting at 5am?", Err(Refusal::Number)),
        ("What is the 2024 holiday calendar?", "What is the 2025 holiday calendar?", Err(Refusal::Number)),
        ("What is the first step?", "What is the second step?", Err(Refusal::Number)),
        // Negations.
        ("Is shipping free?", "Is shipping not free?", Err(Refusal::Negation)),
        ("Why can't I log in?", "Why can I log in?", Err(Refusal::Negation)),
        ("Why cant I log in", "How do I log in", Err(Refusal::Negation)),
        ("Can I travel without a passport?", "Can I travel with a passport?", Err(Refusal::Negation)),
        ("Why don't I get emails?", "Why am I not getting emails?", Ok(())),
        ("Is the ticket non-refundable?", "Is the ticket refundable?", Err(Refusal::Negation)),
        ("I never got my order", "I got my order", Err(Refusal::Negation)),
        // Antonyms, by list and by prefix.
        ("How do I enable 2FA?", "How do I disable 2FA?", Err(Refusal::Antonym)),
        ("How do I add a user?", "How do I remove a user?", Err(Refusal::Antonym)),
        ("How do I upgrade my plan?", "How do I downgrade my plan?", Err(Refusal::Antonym)),
        ("How do I cancel my subscription?", "How do I renew my subscription?", Err(Refusal::Antonym)),
        ("How do I log in?", "How do I log out?", Err(Refusal::Antonym)),
        ("How do I lock my card?", "How do I unlock my card?", Err(Refusal::Antonym)),
        ("How do I connect my bank?", "How do I disconnect my bank?", Err(Refusal::Antonym)),
        ("How do I activate my account?", "How do I reactivate my account?", Err(Refusal::Antonym)),
        ("Is this code valid?", "Is this code invalid?", Err(Refusal::Antonym)),
        ("Can I change my old password?", "Can I change my new password?", Err(Refusal::Antonym)),
        ("Turn on notifications", "Turn off notifications", Err(Refusal::Antonym)),
        ("How do I add a user?", "How do I add a new user?", Ok(())),
        // Both sides in one question: no contrast, no refusal.
        ("Can I add and remove users?", "Can I remove and add users?", Ok(())),
        // Entities, with aliases.
        ("Do you ship to Canada?", "Do you ship to Mexico?", Err(Refusal::Entity)),
        ("Do you ship to the USA?", "Do you ship to America?", Ok(())),
        ("Is the app available in Spanish?", "Is the app available in French?", Err(Refusal::Entity)),
        ("How do I install it on Windows?", "How do I install it on Mac?", Err(Refusal::Entity)),
        ("What does the premium plan include?", "What does the basic plan include?", Err(Refusal::Entity)),
        ("Does it cover dental?", "Does it cover vision?", Err(Refusal::Entity)),
        ("Can I pay with PayPal?", "Do you accept PayPal?", Ok(())),
        ("Can I export to CSV?", "Can I export to Excel?", Err(Refusal::Entity)),
        // Ownership.
        ("How do I reset my password?", "How do I reset their password?", Err(Refusal::Ownership)),
        ("What is our refund policy?", "What is their refund policy?", Err(Refusal::Ownership)),
        ("Can I see her schedule?", "Can I see my schedule?", Err(Refusal::Ownership)),
        // Content: a swapped word refuses, an added detail or a synonym does not.
        ("Is my data encrypted in transit?", "Is my data encrypted at rest?", Err(Refusal::Content)),
        ("How do I submit an expense report?", "How do I approve an expense report?", Err(Refusal::Content)),
        ("Can I keep my number if I switch?", "Can I change my number if I switch?", Err(Refusal::Content)),
        ("How do I request time off?", "How do I cancel a time off request?", Err(Refusal::Content)),
        ("How do I cancel my order?", "How do I cancel my purchase?", Ok(())),
        ("How do I track my shipment?", "How can I track my delivery", Ok(())),
        ("What are the system requirements?", "What are the minimum system requirements?", Ok(())),
        ("Do unused vacation days roll over?", "Can I carry over my unused vacation days?", Ok(())),
        ("How do I turn on notifications?", "How do I enable notifications?", Ok(())),
        ("How do I turn off notifications?", "How do I enable notifications?", Err(Refusal::Antonym)),
        ("How do I log in?", "How do I sign in?", Ok(())),
        ("How do I sign in?", "How do I sign up?", Err(Refusal::Content)),
        ("Can I use the same account on two devices?", "Can I use two accounts on the same device?", Err(Refusal::Content)),
        // Possessives: the same word in another role.
        ("Can my manager see my review?", "Can I see my manager's review?", Err(Refusal::Ownership)),
        ("How do I change the language of the app?", "How can I change the app's language?", Ok(())),
        ("How do I update the firmware?", "How can I update my device's firmware?", Ok(())),
        // Form: a yes/no question is not an open one.
        ("How do I cancel my order?", "Can I cancel my order?", Err(Refusal::Form)),
        ("Is shipping free?", "Do you offer free shipping?", Ok(())),
        // The stored question may be the more detailed one (the swapped query may not).
        ("How long does shipping take?", "How long does express shipping take?", Ok(())),
    ];

    #[test]
    fn a_query_more_detailed_than_the_stored_question_is_refused() {
        for (q, c) in [
            (
                "How long does express shipping take?",
                "How long does shipping take?",
            ),
            ("Is my data encrypted at rest?", "Is my data encrypted?"),
        ] {
            assert_eq!(run(q, c), Err(Refusal::Content), "{q:?} / {c:?}");
            assert_eq!(run(c, q), Ok(()), "{c:?} / {q:?}");
        }
    }

    #[test]
    fn table() {
        for (q, c, want) in CASES {
            assert_eq!(run(q, c), *want, "query {q:?} candidate {c:?}");
            // Symmetric, except that a query may not be the more detailed one: where the
            // stored question adds a detail, asking the stored question's way round is
            // refused as content.
            let swapped = run(c, q);
            assert!(
                swapped == *want || (*want == Ok(()) && swapped == Err(Refusal::Content)),
                "query {c:?} candidate {q:?} (swapped): {swapped:?}"
            );
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
    fn stems_are_prefixes() {
        for (w, want) in [
            ("shipping", "ship"),
            ("shipped", "ship"),
            ("ships", "ship"),
            ("invoices", "invoic"),
            ("invoice", "invoic"),
            ("deliveries", "deliver"),
            ("delivery", "deliver"),
            ("bonuses", "bonu"),
            ("bonus", "bonu"),
            ("user's", "user"),
            ("é", "é"),
            ("", ""),
        ] {
            assert_eq!(stem(w), want, "{w}");
        }
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
    fn too_many_numbers_is_refused() {
        let many = "1 ".repeat(MAX_ITEMS + 1);
        assert_eq!(
            check(&many, &many.replace("1 1", "1  1")),
            Err(Refusal::Number)
        );
    }

    /// Every antonym pair and entity word is reachable: a typo in the lists (a word on both
    /// sides of a pair, or in two entity groups) would silently disable it.
    #[test]
    fn lists_are_consistent() {
        assert!(ANTONYMS.len() <= 128, "side masks are u128");
        for (a, b) in ANTONYMS {
            for w in *a {
                assert!(!b.contains(w), "{w} on both sides");
            }
        }
        let mut seen = std::collections::HashSet::new();
        for group in ENTITIES {
            for w in *group {
                assert!(seen.insert(*w), "{w} in two entity groups");
            }
        }
        let lex = lexicon();
        for w in ENTITIES.iter().flat_map(|g| g.iter()) {
            assert_eq!(words(w).next(), Some(*w), "{w} is not one word");
            assert!(lex.get(w).is_some());
        }
    }

    /// Never panics, on anything: random strings over an alphabet dense in what the word
    /// splitter and the guards look at, multi-byte characters included, raw and
    /// normalized. Symmetric verdicts, and a question always matches itself.
    #[test]
    fn hostile_inputs_never_panic() {
        let alphabet: &[&str] = &[
            "a", "9", " ", "'", ".", ",", "+", "#", "-", "n't", "not", "un", "re", "dis", "2fa",
            "enable", "disable", "canada", "their", "é", "日", "\u{0301}", "\u{200B}", "💥",
            "\u{0000}", "1,", ",1", "1.", ".1", "c+", "'s", "on", "off", "two",
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
                let (a, b) = (check(&q, &c), check(&c, &q));
                // Symmetric but for the query-adds-detail rule (content).
                assert!(
                    a == b || a == Err(Refusal::Content) || b == Err(Refusal::Content),
                    "{q:?} vs {c:?}: {a:?} / {b:?}"
                );
                assert_eq!(check(&q, &q), Ok(()), "{q:?}");
            }
        }
        // Arbitrary bytes made into text.
        for _ in 0..5_000 {
            let bytes: Vec<u8> = (0..(next() % 64)).map(|_| next() as u8).collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = check(&s, "how do i enable 2fa");
            let _ = check("how do i enable 2fa", &s);
        }
    }
}
