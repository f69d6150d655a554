//! Runs the semantic guards over question pairs, for the offline evaluation
//! (`bench/eval_offline.py`) and for trying a pair by hand:
//!
//!     printf 'How do I enable 2FA?\tHow do I disable 2FA?\n' |
//!         cargo run --release --features core-only --example guard_eval
//!
//! Reads `question1 TAB question2` lines on stdin, normalizes both as the module does and
//! writes one line per pair: `ok`, or the refusal's name (`antonym`). The first question is
//! the query, the second the stored one. `--strict` adds the strict rule (`wording`, what
//! runs with no verifier). `--skip number,swap` leaves those rules out (to
//! measure what each is worth). With `--time` it also reports the mean time per `check` call
//! on stderr.

use std::io::{BufRead, BufWriter, Write};
use std::time::Instant;

use redis_qa::normalize::normalize;
use redis_qa::semantic::guard;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let time = args.iter().any(|a| a == "--time");
    let skip: Vec<guard::Refusal> = args
        .iter()
        .position(|a| a == "--skip")
        .and_then(|i| args.get(i + 1))
        .map(|list| {
            list.split(',')
                .filter(|n| !n.is_empty())
                .map(|n| guard::Refusal::from_name(n).unwrap_or_else(|| panic!("no rule {n}")))
                .collect()
        })
        .unwrap_or_default();
    // Without --strict the loose set (what runs before a verifier), as guard::check.
    let mut skip = skip;
    if !args.iter().any(|a| a == "--strict") {
        skip.push(guard::Refusal::Wording);
    }
    let stdin = std::io::stdin();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut pairs = Vec::new();
    for line in stdin.lock().lines() {
        let line = line?;
        let (a, b) = line.split_once('\t').unwrap_or((&line, ""));
        pairs.push((normalize(a), normalize(b)));
    }
    for (a, b) in &pairs {
        let verdict = match guard::check_skipping(a, b, &skip) {
            Ok(()) => "ok",
            Err(r) => r.as_str(),
        };
        writeln!(out, "{verdict}")?;
    }
    out.flush()?;
    if time && !pairs.is_empty() {
        let rounds = 20;
        let start = Instant::now();
        for _ in 0..rounds {
            for (a, b) in &pairs {
                std::hint::black_box(guard::check(std::hint::black_box(a), b)).ok();
            }
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / (rounds * pairs.len()) as f64;
        eprintln!(
            "guard::check: {per:.2} us per pair (mean over {} pairs)",
            pairs.len()
        );
    }
    Ok(())
}
