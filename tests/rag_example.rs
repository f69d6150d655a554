//! examples/rag: the RAG webhook service and its demo (ask, edit one document,
//! `QA.INVALIDATE faq SOURCE refunds.md`, ask again) against a real redis-server with the
//! module. The demo checks its own story and exits 1 if it does not hold; this test also
//! reads what it printed.
//!
//! Needs `python3` (or `QA_PYTHON`) with redis-py >= 5 (`pip install -r
//! tests/python/requirements.txt`); `QA_SKIP_PYTHON=1` skips it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn the_rag_demo_regenerates_only_the_answers_citing_the_edited_document() {
    if std::env::var("QA_SKIP_PYTHON").as_deref() == Ok("1") {
        let _ = writeln!(std::io::stderr(), "rag demo: SKIPPED (QA_SKIP_PYTHON=1)");
        return;
    }
    let s = Server::start(&[]);
    let port = s.port.to_string();
    let python = std::env::var("QA_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(python);
    cmd.args(["examples/rag/demo.py", "--port", &port])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null());
    let run = run_with_deadline(cmd, Duration::from_secs(60));
    println!("{}", run.shown());
    assert!(run.ok, "the demo failed\n{}", run.shown());
    let out = &run.stdout;
    assert!(
        out.contains("QA.INVALIDATE faq SOURCE refunds.md -> 2"),
        "{out}"
    );
    assert!(
        out.contains("OK: only the answers citing the edited document were regenerated."),
        "{out}"
    );
    // The third round: two misses (the answers citing refunds.md), three hits.
    let third = out.split("== 3.").nth(1).unwrap();
    assert_eq!(third.matches("[miss]").count(), 2, "{third}");
    assert_eq!(third.matches("[ hit]").count(), 3, "{third}");
    assert_eq!(third.matches("within 14 days").count(), 2, "{third}");
    // The module's settings were put back.
    let mut con = s.conn();
    let format: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "qa.backend-format"])
        .query(&mut con)
        .unwrap();
    assert_eq!(format[1], "openai");
}
