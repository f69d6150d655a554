//! The repository's redis.conf loads the release build and every qa.* line in it is accepted.

mod common;

use std::path::Path;

use common::*;

#[test]
fn repository_redis_conf_loads_and_sets_every_setting() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let conf = std::fs::read_to_string(root.join("redis.conf")).unwrap();
    assert!(conf.contains("\nloadmodule ./target/release/libredis_qa.so\n"));
    // Run it with this build of the module, everything else as written.
    let rewritten = conf.replace(
        "loadmodule ./target/release/libredis_qa.so",
        &format!("loadmodule {}", module_path().display()),
    );
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
        let value = value.trim_matches('"');
        assert_eq!(got.get(name).map(String::as_str), Some(value), "{name}");
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
