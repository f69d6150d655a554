//! Test harness: real `redis-server` processes with the module loaded, on free loopback
//! ports, each in its own temp dir, killed on drop (with the log tail printed if the test
//! failed). The server binary is `QA_TEST_SERVER` (default `redis-server`); the module is
//! `QA_MODULE` (default: this profile's build of `libredis_qa.so`).

#![allow(dead_code)]

pub mod backend;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("QA_MODULE") {
        return PathBuf::from(p);
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join(profile).join("libredis_qa.so")
}

pub fn server_binary() -> String {
    std::env::var("QA_TEST_SERVER").unwrap_or_else(|_| "redis-server".into())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` every 10 ms until it is true or `deadline` passes; returns its last value.
pub fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Server {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
    /// A config file given first on the command line; it loads the module itself.
    conf: Option<PathBuf>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server with the module and `extra` arguments (e.g. `--qa.ttl`, `60`).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_full(None, extra, env)
    }

    /// Starts a server from a config file (which must load the module), plus `extra`.
    pub fn start_with_conf(conf: &Path, extra: &[&str]) -> Server {
        Self::start_full(Some(conf.to_path_buf()), extra, &[])
    }

    fn start_full(conf: Option<PathBuf>, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_on(free_port(), conf, extra, env)
    }

    fn start_on(port: u16, conf: Option<PathBuf>, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("test-servers")
            .join(format!("{}-{}", std::process::id(), port));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server dir");
        let mut s = Server {
            port,
            dir,
            child: None,
            conf,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let module = module_path();
        assert!(module.exists(), "module not built: {}", module.display());
        let mut cmd = Command::new(server_binary());
        if let Some(conf) = &self.conf {
            cmd.arg(conf);
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg("redis.log")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no");
        if self.conf.is_none() {
            cmd.arg("--loadmodule").arg(&module);
        }
        cmd.args(&self.extra)
            .env_remove("QA_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("stderr.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn redis-server"));
        let url = self.url();
        let up = wait_until(Duration::from_secs(10), || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        if !up {
            panic!("redis-server did not start:\n{}", self.log_tail(30));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .expect("connect")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let mut log = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        log.push_str(&std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default());
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the server again on the same port and dir, with the same arguments
    /// plus `more`.
    pub fn restart(&mut self, more: &[&str]) {
        self.kill();
        self.extra.extend(more.iter().map(|s| s.to_string()));
        self.spawn();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis.log (port {}) ---\n{}",
                self.port,
                self.log_tail(40)
            );
        }
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The exact text of an error reply, code included (`ERR ...`, `WRONGTYPE ...`).
pub fn err_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => e.to_string(),
    }
}

/// `QA.GET` with arguments, as a result.
/// `CONFIG SET <name> <value>`, which must succeed.
pub fn config_set(con: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(con)
        .unwrap_or_else(|e| panic!("CONFIG SET {name} {value}: {e}"));
}

pub fn qa_get(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<String> {
    redis::cmd("QA.GET").arg(args).query(con)
}

/// The `qa_<field>` value of `INFO qa`.
pub fn info_field(con: &mut redis::Connection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("qa").query(con).expect("INFO qa");
    let prefix = format!("qa_{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no qa_{field} in INFO:\n{info}"))
}

/// Number of keys in the current database.
/// Keys in the selected database, not counting the caches' generation keys
/// (`qa:{<cache>}:gen`, made by a cache's first write): what the tests count is entries.
pub fn dbsize(con: &mut redis::Connection) -> u64 {
    let all: u64 = redis::cmd("DBSIZE").query(con).expect("DBSIZE");
    let gens: Vec<String> = redis::cmd("KEYS")
        .arg("qa:{*}:gen")
        .query(con)
        .expect("KEYS");
    all - gens.len() as u64
}

// ---- Durability helpers (persistence, memory, cluster, lifecycle tests) ----

/// A free loopback port `p` whose cluster bus port `p + 10000` is free as well.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p > 55535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
    panic!("no port p with p + 10000 free");
}

impl Server {
    /// Like [`Server::start`], on a port whose cluster bus port (`port + 10000`) is free, for
    /// `--cluster-enabled yes` nodes.
    pub fn start_cluster_node(extra: &[&str]) -> Server {
        Self::start_on(free_cluster_port(), None, extra, &[])
    }

    /// Waits up to `deadline` for the server process to exit on its own; its exit status, or
    /// `None` if it is still running.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the server process runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The whole log (stderr and redis.log).
    pub fn log(&self) -> String {
        self.log_tail(usize::MAX)
    }
}

/// `field` of `INFO <section>`, as text (panics if absent).
pub fn info_str(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let info: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{info}"))
}

/// `field` of `INFO <section>` as a number.
pub fn info_num(con: &mut redis::Connection, section: &str, field: &str) -> u64 {
    info_str(con, section, field)
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number"))
}

/// Runs `redis-cli` with `args`; (exit success, stdout, stderr).
pub fn redis_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every key matching `pattern` (SCAN, so it works on big databases too), sorted.
pub fn scan_keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    let mut cursor = 0u64;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        // The caches' generation keys are not entries (see `dbsize`).
        keys.extend(batch.into_iter().filter(|k| !k.ends_with("}:gen")));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

/// The body of a chat completion whose answer is `content` (for `Reply::Raw`).
pub fn completion_body(content: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 120, "total_tokens": 132}
    })
    .to_string()
}

/// How a child process (a Python or Node example, a test suite) ended.
pub struct Run {
    pub ok: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn shown(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Spawns `cmd` (its stdout and stderr are captured here) and waits at most `deadline`,
/// killing it then.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Run {
    use std::io::Read;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let end = Instant::now() + deadline;
    let (ok, status) = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break (st.success(), st.to_string());
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            break (false, format!("killed after {deadline:?} (timed out)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        ok,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// (first slot, last slot, owner's port) for every slot range, as the node of `con` sees them.
pub fn slot_owners(con: &mut redis::Connection) -> Vec<(u16, u16, u16)> {
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query(con).unwrap();
    slots
        .iter()
        .map(|range| {
            let int = |v: &redis::Value| redis::from_redis_value::<u16>(v).unwrap();
            let master: Vec<redis::Value> = redis::from_redis_value(&range[2]).unwrap();
            (int(&range[0]), int(&range[1]), int(&master[1]))
        })
        .collect()
}

/// Three cluster primaries (no replicas) with the module, created with
/// `redis-cli --cluster create`, every slot covered and every node agreeing.
pub fn start_cluster(backend_url: &str) -> Vec<Server> {
    start_cluster_with(backend_url, &[])
}

/// [`start_cluster`] with more arguments for every node.
pub fn start_cluster_with(backend_url: &str, extra: &[&str]) -> Vec<Server> {
    let nodes: Vec<Server> = (0..3)
        .map(|_| {
            let mut args = vec![
                "--qa.backend-url",
                backend_url,
                "--cluster-enabled",
                "yes",
                // Each node has its own directory: the file name need not be unique.
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ];
            args.extend_from_slice(extra);
            Server::start_cluster_node(&args)
        })
        .collect();
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(|s| s.as_str()));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let (ok, out, err) = redis_cli(&args);
    assert!(ok, "redis-cli --cluster create failed:\n{out}\n{err}");
    let ready = wait_until(Duration::from_secs(20), || {
        nodes.iter().all(|n| {
            let mut con = n.conn();
            let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap();
            info.contains("cluster_state:ok") && slot_owners(&mut con).len() == 3
        })
    });
    assert!(ready, "the cluster did not become ready");
    nodes
}

/// Whether the replica of `con` is connected to its primary.
pub fn link_up(con: &mut redis::Connection) -> bool {
    let info: String = redis::cmd("INFO").arg("replication").query(con).unwrap();
    info.contains("master_link_status:up")
}

/// A primary (with `primary_extra`) and a replica of it (with `replica_extra`), both without
/// the diskless-sync delay, returned once the replication link is up.
pub fn primary_and_replica(primary_extra: &[&str], replica_extra: &[&str]) -> (Server, Server) {
    let mut args = primary_extra.to_vec();
    args.extend(["--repl-diskless-sync-delay", "0"]);
    let primary = Server::start(&args);
    let port = primary.port.to_string();
    let mut args = replica_extra.to_vec();
    args.extend([
        "--repl-diskless-sync-delay",
        "0",
        "--replicaof",
        "127.0.0.1",
        &port,
    ]);
    let replica = Server::start(&args);
    let mut r = replica.conn();
    assert!(
        wait_until(Duration::from_secs(10), || link_up(&mut r)),
        "the replica did not connect"
    );
    (primary, replica)
}

/// The entry keys in the selected database (`qa:*` without the caches' generation keys).
pub fn entry_keys(con: &mut redis::Connection) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("qa:*").query(con).unwrap();
    keys.into_iter().filter(|k| !k.ends_with(":gen")).collect()
}

/// The fields of the entry at `key`, read with plain commands and decoded here, apart from
/// the module's own decoder: a v2 string (`GET`, see docs/entry-format.md) or a hash written
/// by an older build (`HGETALL`). Names as in the hash: `answer`, `question`, `model`,
/// `created`, `tokens_in`, `tokens_out`, `latency_ms`, `fresh_until` (absent: no stale
/// grace), `sem` (absent: no embedding; as lossy text). Empty: no key, or not an entry.
pub fn entry_fields(
    con: &mut redis::Connection,
    key: &str,
) -> std::collections::HashMap<String, String> {
    let kind: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    if kind == "hash" {
        return redis::cmd("HGETALL").arg(key).query(con).unwrap();
    }
    if kind != "string" {
        return Default::default();
    }
    let v: Vec<u8> = redis::cmd("GET").arg(key).query(con).unwrap();
    decode_entry(&v).unwrap_or_default()
}

/// Decodes a v2 entry string (see [`entry_fields`]); `None` if it is not one.
pub fn decode_entry(v: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    let nl = v.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&v[..nl]).ok()?;
    let mut words = header.split(' ');
    if words.next()? != "qa2" {
        return None;
    }
    let names = ["c", "f", "i", "o", "l", "m", "q", "a", "s"];
    let mut h = std::collections::HashMap::new();
    for (want, word) in names.iter().zip(words.by_ref()) {
        let (name, value) = word.split_once('=')?;
        if name != *want {
            return None;
        }
        h.insert(name, value.to_string());
    }
    if h.len() != names.len() || words.next().is_some() {
        return None;
    }
    let len = |n: &str| h[n].parse::<usize>().ok();
    let (q, a, s) = (len("q")?, len("a")?, len("s")?);
    let body = &v[nl + 1..];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = std::collections::HashMap::new();
    out.insert("question".to_string(), text(body.get(..q)?));
    if body.get(q) != Some(&b'\n') {
        return None;
    }
    out.insert("answer".to_string(), text(body.get(q + 1..q + 1 + a)?));
    let rest = &body[q + 1 + a..];
    if s > 0 {
        if rest.len() != s + 1 || rest[0] != b'\n' {
            return None;
        }
        out.insert("sem".to_string(), text(&rest[1..]));
    } else if !rest.is_empty() {
        return None;
    }
    // The model's %XX escapes.
    let m = h["m"].as_bytes();
    let mut model = Vec::new();
    let mut i = 0;
    while i < m.len() {
        if m[i] == b'%' {
            model.push(
                u8::from_str_radix(std::str::from_utf8(m.get(i + 1..i + 3)?).ok()?, 16).ok()?,
            );
            i += 3;
        } else {
            model.push(m[i]);
            i += 1;
        }
    }
    out.insert("model".to_string(), text(&model));
    for (name, field) in [
        ("c", "created"),
        ("i", "tokens_in"),
        ("o", "tokens_out"),
        ("l", "latency_ms"),
    ] {
        out.insert(field.to_string(), h[name].clone());
    }
    if h["f"] != "0" {
        out.insert("fresh_until".to_string(), h["f"].clone());
    }
    Some(out)
}

/// `QA.GET <args> WITHMETA` as (field, value) pairs, in order (RESP2: a flat array).
pub fn meta(con: &mut redis::Connection, args: &[&str]) -> Vec<(String, String)> {
    let flat: Vec<redis::Value> = redis::cmd("QA.GET")
        .arg(args)
        .arg("WITHMETA")
        .query(con)
        .expect("QA.GET WITHMETA");
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    flat.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect()
}
