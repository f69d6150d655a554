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
        vec!["qa.audit", "qa.get", "qa.key", "qa.peek", "qa.stats"],
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
