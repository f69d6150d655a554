//! The repository's redis.conf: every qa.* line in it is accepted, and as shipped it keeps
//! the cache across a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::backend::{answer_for, Backend};
use common::*;

#[test]
fn repository_redis_conf_loads_and_sets_every_setting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let conf = std::fs::read_to_string(root.join("redis.conf")).unwrap();
    // make run passes the module's absolute path (`dir` would break a relative one); the
    // file only shows the line, commented out.
    assert!(!conf.lines().any(|l| l.starts_with("loadmodule")));
    assert!(conf.contains("\n# loadmodule /path/to/redis-qa/target/release/libredis_qa.so\n"));
    // Run it with this build of the module, everything else as written but `dir` (the
    // harness gives every server a directory of its own).
    assert!(conf.contains("\ndir ./data\n"));
    let rewritten =
        conf.replace("\ndir ./data\n", "\n") + &format!("loadmodule {}\n", module_path().display());
    let dir = root.join("target").join("test-servers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("redis-{}.conf", std::process::id()));
    std::fs::write(&path, rewritten).unwrap();
    let s = Server::start_with_conf(&path, &[]);
    let mut con = s.conn();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.*")
        .query(&mut con)
        .unwrap();
    let got: std::collections::HashMap<_, _> = got
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let mut listed = 0;
    for line in conf.lines().filter(|l| l.starts_with("qa.")) {
        let (name, value) = line.split_once(' ').unwrap();
        // A quoted value may hold `\n` escapes (qa.context-template).
        let value = value.trim_matches('"').replace("\\n", "\n");
        assert_eq!(got.get(name), Some(&value), "{name}");
        listed += 1;
    }
    assert_eq!(listed, got.len(), "redis.conf lists every qa.* setting");
    let _ = std::fs::remove_file(path);
}

#[test]
fn module_arguments_set_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target").join("test-servers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("args-{}.conf", std::process::id()));
    let conf = format!(
        "loadmodule {} ttl 61 model llama3\n",
        module_path().display()
    );
    std::fs::write(&path, conf).unwrap();
    let s = Server::start_with_conf(&path, &[]);
    let mut con = s.conn();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.ttl")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, vec!["qa.ttl", "61"]);
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("qa.model")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, vec!["qa.model", "llama3"]);
    let _ = std::fs::remove_file(path);
}

/// redis-server started from the shipped redis.conf as `make run` starts it: in a directory of
/// its own (holding the `data/` that `dir ./data` names), the module by its absolute path,
/// only the port and the backend given on the command line. Killed on drop.
struct Shipped {
    child: Option<Child>,
    cwd: PathBuf,
    port: u16,
    backend: String,
}

impl Shipped {
    fn start(cwd: &Path, port: u16, backend: &str) -> Shipped {
        let mut s = Shipped {
            child: None,
            cwd: cwd.to_path_buf(),
            port,
            backend: backend.to_string(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("redis.conf");
        let child = Command::new(server_binary())
            .current_dir(&self.cwd)
            .arg(conf)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--loadmodule")
            .arg(module_path())
            .arg("--qa.backend-url")
            .arg(&self.backend)
            .arg("--logfile")
            .arg("redis.log")
            .env_remove("QA_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        // PING answers LOADING until the AOF is loaded.
        let url = self.url();
        let up = wait_until(Duration::from_secs(20), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        assert!(up, "redis-server did not start:\n{}", self.log());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .expect("connect")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.cwd.join("data").join("redis.log")).unwrap_or_default()
    }

    /// What Ctrl-C does to `make run`: SIGINT, and Redis shuts down cleanly.
    fn interrupt_and_wait(&mut self) {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .expect("kill -INT");
        assert!(sent.success());
        let mut status = None;
        let exited = wait_until(Duration::from_secs(20), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            exited,
            "redis-server did not stop on SIGINT:\n{}",
            self.log()
        );
        assert!(status.unwrap().success(), "{status:?}\n{}", self.log());
    }
}

impl Drop for Shipped {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- redis.log ---\n{}", self.log());
        }
    }
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => panic!("not a string: {other:?}"),
    }
}

#[test]
fn the_shipped_redis_conf_keeps_the_cache_across_a_restart() {
    let b = Backend::start(Duration::ZERO);
    let cwd = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-servers")
        .join(format!("shipped-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cwd);
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    let mut s = Shipped::start(&cwd, free_port(), &b.url());
    let mut con = s.conn();
    let persistence: String = redis::cmd("INFO")
        .arg("persistence")
        .query(&mut con)
        .unwrap();
    assert!(persistence.contains("aof_enabled:1"), "{persistence}");
    let dir: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        std::fs::canonicalize(&dir[1]).unwrap(),
        std::fs::canonicalize(cwd.join("data")).unwrap()
    );
    let q = "What is our refund policy?";
    let answer = answer_for(q, "gpt-4o-mini", "");
    assert_eq!(qa_get(&mut con, &["faq", q]).unwrap(), answer);
    assert_eq!(b.calls(), 1);
    drop(con);

    s.interrupt_and_wait();
    assert!(cwd.join("data").join("appendonlydir").is_dir());
    s.spawn();

    let mut con = s.conn();
    // The same question, spelled differently: a hit from the reloaded entry, no backend call.
    let meta: Vec<redis::Value> = redis::cmd("QA.GET")
        .arg("faq")
        .arg(" what is our REFUND policy ")
        .arg("WITHMETA")
        .query(&mut con)
        .unwrap();
    let meta: Vec<String> = meta.iter().map(text).collect();
    assert_eq!(meta[..4], ["answer", answer.as_str(), "served", "hit"]);
    assert_eq!(b.calls(), 1);
    assert_eq!(info_field(&mut con, "backend_calls"), 0);
    drop(s);
    let _ = std::fs::remove_dir_all(&cwd);
}
