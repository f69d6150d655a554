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
