//! The cache name is the command's read-only key: ACL key patterns apply to cache names.

mod common;

use std::time::Duration;

use common::backend::Backend;
use common::*;

#[test]
fn key_patterns_apply_to_cache_names_and_read_only_patterns_suffice() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut admin = s.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">pw")
        .arg("+qa.get")
        .arg("%R~public*")
        .query(&mut admin)
        .unwrap();
    let mut app = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg("app")
        .arg("pw")
        .query(&mut app)
        .unwrap();
    assert!(qa_get(&mut app, &["public", "q"]).is_ok());
    assert!(qa_get(&mut app, &["public:docs", "q"]).is_ok());
    let e = qa_get(&mut app, &["secret", "q"]).unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    assert_eq!(b.calls(), 2);
    let keys: redis::RedisResult<Vec<String>> = redis::cmd("COMMAND")
        .arg("GETKEYS")
        .arg("QA.GET")
        .arg("faq")
        .arg("question")
        .query(&mut admin);
    assert_eq!(keys.unwrap(), vec!["faq"]);
}

/// Where the server lets modules set ACL categories (Redis 7.2+ and Valkey), the commands are
/// in `@read` / `@write` (+ `@fast`), so category-based recipes work; on Redis 7.0 they are in
/// none and users need `+qa.get` and the like.
#[test]
fn acl_categories_where_the_server_supports_them() {
    let b = Backend::start(Duration::ZERO);
    let url = b.url();
    let s = Server::start(&["--qa.backend-url", &url]);
    let mut admin = s.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut admin).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_string();
    let valkey = info.contains("valkey_version:") || info.contains("server_name:valkey");
    let supported = valkey || version.as_str() >= "7.2";
    let in_cat = |con: &mut redis::Connection, cat: &str| -> Vec<String> {
        let mut v: Vec<String> = redis::cmd("ACL").arg("CAT").arg(cat).query(con).unwrap();
        v.retain(|c| c.starts_with("qa."));
        v.sort();
        v
    };
    let read = in_cat(&mut admin, "read");
    let write = in_cat(&mut admin, "write");
    if !supported {
        assert!(
            read.is_empty() && write.is_empty(),
            "{version}: {read:?} {write:?}"
        );
        return;
    }
    assert_eq!(
        read,
        vec![
            "qa.audit",
            "qa.entry",
            "qa.get",
            "qa.key",
            "qa.peek",
            "qa.sources",
            "qa.stats",
            "qa.stream"
        ],
        "{version}"
    );
    assert_eq!(
        write,
        vec!["qa.del", "qa.invalidate", "qa.set"],
        "{version}"
    );
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "reader", "on", ">pw", "+@read", "%R~public*"])
        .query(&mut admin)
        .unwrap();
    let mut r = s.conn();
    let _: () = redis::cmd("AUTH")
        .arg("reader")
        .arg("pw")
        .query(&mut r)
        .unwrap();
    assert!(qa_get(&mut r, &["public", "q"]).is_ok());
    let e = redis::cmd("QA.SET")
        .arg(&["public", "q", "a"])
        .query::<String>(&mut r)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
}

/// QA.RESETSTATS is for operators: in `@admin` (and `@dangerous`) where the server supports
/// categories, never in `@read` or `@write`; on every server a user needs it by name or by
/// category, and `+qa.stats` does not grant it.
#[test]
fn resetstats_is_an_admin_command() {
    let s = Server::start(&[]);
    let mut admin = s.conn();
    let info: String = redis::cmd("INFO").arg("server").query(&mut admin).unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_string();
    let valkey = info.contains("valkey_version:") || info.contains("server_name:valkey");
    let supported = valkey || version.as_str() >= "7.2";
    let in_cat = |con: &mut redis::Connection, cat: &str| -> bool {
        let v: Vec<String> = redis::cmd("ACL").arg("CAT").arg(cat).query(con).unwrap();
        v.iter().any(|c| c == "qa.resetstats")
    };
    assert!(!in_cat(&mut admin, "read"), "{version}");
    assert!(!in_cat(&mut admin, "write"), "{version}");
    assert_eq!(in_cat(&mut admin, "admin"), supported, "{version}");
    assert_eq!(in_cat(&mut admin, "dangerous"), supported, "{version}");

    let user = |admin: &mut redis::Connection, name: &str, rules: &[&str]| {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(name)
            .arg(&["on", ">pw"])
            .arg(rules)
            .query(admin)
            .unwrap();
        let mut con = s.conn();
        let _: () = redis::cmd("AUTH")
            .arg(name)
            .arg("pw")
            .query(&mut con)
            .unwrap();
        con
    };
    let reset = |con: &mut redis::Connection| -> Result<String, String> {
        redis::cmd("QA.RESETSTATS")
            .query::<String>(con)
            .map_err(|e| e.code().unwrap_or("").to_string())
    };
    // A user who may read the figures may not reset them.
    let mut viewer = user(
        &mut admin,
        "viewer",
        &["+qa.stats", "+@read", "+@write", "~*"],
    );
    assert_eq!(reset(&mut viewer), Err("NOPERM".to_string()));
    // By name, on every server.
    let mut ops = user(&mut admin, "ops", &["+qa.resetstats"]);
    assert_eq!(reset(&mut ops), Ok("OK".to_string()));
    // By category where there are categories.
    let mut admins = user(&mut admin, "admins", &["+@admin"]);
    let want = if supported {
        Ok("OK".to_string())
    } else {
        Err("NOPERM".to_string())
    };
    assert_eq!(reset(&mut admins), want, "{version}");
}
