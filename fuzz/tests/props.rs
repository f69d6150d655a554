//! The fuzz checks on generated inputs, with stable `cargo test` (no nightly, no libFuzzer):
//! the seeds (fuzz/seeds/<target>/), then `QA_PROPS_CASES` (default 20000) pseudo-random inputs per check,
//! biased towards the bytes that matter (JSON punctuation, whitespace, punctuation, UTF-8
//! lead bytes, NUL). `QA_PROPS_SEED` replays a run.

use std::path::Path;

type Check = fn(&[u8]);

const CHECKS: &[(&str, Check)] = &[
    ("normalize_key", redis_qa_fuzz::normalize_key),
    ("parse_openai", redis_qa_fuzz::parse_openai),
    ("parse_anthropic", redis_qa_fuzz::parse_anthropic),
    ("parse_webhook", redis_qa_fuzz::parse_webhook),
    ("args", redis_qa_fuzz::args),
    ("excerpt", redis_qa_fuzz::excerpt),
    ("entry_v2", redis_qa_fuzz::entry_v2),
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1e400",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b" ",
    b"\t",
    b"\n",
    b"?",
    b"!",
    b".",
    b"\0",
    b"\xe3\x80\x82",
    b"\xef\xbc\x9f",
    b"\xe2\x80\x8b",
    b"\xef\xbb\xbf",
    b"\xcc\x81",
    b"\xff",
    b"\xc3",
    b"TTL",
    b"STALE",
    b"MODEL",
    b"SYSTEM",
    b"REFRESH",
    b"WITHMETA",
    b"{}",
    b"[]",
    b"\"text\"",
    b"\"type\"",
    b"\"answer\"",
    b"315360000",
    b"315360001",
    b"redacted",
    b"qa2 c=1 f=0 i=0 o=0 l=0 m=m q=1 a=1 s=0\nq\na",
    b"qa2 c=",
    b" q=",
    b" a=",
    b" s=",
    b"%20",
];

fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..rng.below(24) {
        match rng.below(3) {
            0 => v.extend_from_slice(INTERESTING[rng.below(INTERESTING.len())]),
            1 => v.push(rng.below(128) as u8),
            _ => v.push(rng.below(256) as u8),
        }
    }
    v
}

#[test]
fn fuzz_checks_hold_on_the_corpus_and_generated_inputs() {
    let cases: usize = std::env::var("QA_PROPS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("QA_PROPS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, check) in CHECKS {
        let mut seeds = 0;
        if let Ok(dir) = std::fs::read_dir(corpus.join(name)) {
            for f in dir.flatten() {
                check(&std::fs::read(f.path()).unwrap());
                seeds += 1;
            }
        }
        let mut rng = Rng(seed ^ name.len() as u64);
        for i in 0..cases {
            let input = generate(&mut rng);
            let r = std::panic::catch_unwind(|| check(&input));
            assert!(
                r.is_ok(),
                "{name}: case {i} (seed {seed}) failed on {:?}",
                String::from_utf8_lossy(&input)
            );
        }
        eprintln!("{name}: {seeds} corpus inputs, {cases} generated");
    }
}
