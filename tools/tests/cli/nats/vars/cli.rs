//! Round trips between the library and the command line across two roots;
//! what each operation answers when the variable, key or item is not
//! there (exit 3); bad input and wrong credentials: one line, nothing
//! changed.

use super::*;
use crate::bridge::setup::Side;
use crate::nats::engine::*;
use serde_json::json;

#[test]
fn values_round_trip_between_the_library_and_the_cli_across_two_roots() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    // The library stands for machine B, the CLI runs on A and on B.
    let vars = open(&url, "tape");

    let limit = json!({"max": 100, "syms": ["IF2406", "rb2410"], "note": "é€ \"q\"", "f": 1.5});
    let rev = vars.put("risk.limit", &limit).unwrap();
    assert!(rev > 0);
    assert_eq!(var_get(&a, &url, "risk.limit"), Some(limit.clone()));

    var_ok(&a, &url, &["put", "cfg.mode", "\"live\""]);
    let e = vars.get("cfg.mode").unwrap().expect("cfg.mode is there");
    assert_eq!(e.value, json!("live"));
    assert!(
        e.revision > rev,
        "revisions grow: {} after {rev}",
        e.revision
    );
    assert!(e.time_ns > 0);
    // A value that starts with a minus is a value, not an option.
    var_ok(&b, &url, &["put", "cfg.offset", "-5"]);
    assert_eq!(vars.get("cfg.offset").unwrap().unwrap().value, json!(-5));

    // Lists, from both sides.
    var_ok(&a, &url, &["list-push", "orders", "1"]);
    var_ok(&a, &url, &["list-push", "orders", "{\"id\":2}"]);
    vars.list_push("orders", &json!(3)).unwrap();
    assert_eq!(var_get(&b, &url, "orders"), Some(json!([1, {"id": 2}, 3])));
    assert_eq!(vars.list_pop("orders", Some(0)).unwrap(), json!(1));
    assert_eq!(var_ok(&a, &url, &["list-pop", "orders"]).trim(), "3");
    var_ok(&b, &url, &["list-push", "orders", "4"]);
    assert_eq!(
        var_ok(&b, &url, &["list-pop", "orders", "-2"]).trim(),
        "{\"id\":2}"
    );
    var_ok(&a, &url, &["list-remove", "orders", "4"]);
    assert_eq!(vars.get("orders").unwrap().unwrap().value, json!([]));

    // Objects.
    var_ok(&a, &url, &["dict-set", "pos", "IF2406", "3"]);
    vars.dict_set("pos", "rb2410", &json!(-2)).unwrap();
    assert_eq!(var_ok(&b, &url, &["dict-del", "pos", "IF2406"]).trim(), "3");
    assert_eq!(
        vars.get("pos").unwrap().unwrap().value,
        json!({"rb2410": -2})
    );
    assert_eq!(vars.dict_del("pos", "rb2410").unwrap(), json!(-2));
    assert_eq!(var_get(&a, &url, "pos"), Some(json!({})));

    // Listing, with and without a pattern.
    let all = json_lines(var_ok(&b, &url, &["ls", "--json"]).as_bytes());
    let names: Vec<&str> = all.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["cfg.mode", "cfg.offset", "orders", "pos", "risk.limit"]
    );
    let lim = all.iter().find(|v| v["name"] == "risk.limit").unwrap();
    assert_eq!(lim["value"], limit);
    assert_eq!(lim["revision"], rev);
    let cfg = var_ok(&a, &url, &["ls", "cfg.*"]);
    assert_eq!(cfg, "cfg.mode \"live\"\ncfg.offset -5\n");
    assert_eq!(
        vars.list("cfg.>").unwrap().len(),
        2,
        "the library lists the same"
    );

    // Deletion, seen from the other side.
    var_ok(&b, &url, &["del", "cfg.mode"]);
    assert_eq!(vars.get("cfg.mode").unwrap(), None);
    assert_eq!(var_get(&a, &url, "cfg.mode"), None);
    let names: Vec<String> = vars
        .list(">")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!names.contains(&"cfg.mode".to_string()), "{names:?}");

    // Buckets are apart.
    var_ok(&a, &url, &["put", "x", "1", "--bucket", "other"]);
    assert_eq!(var_get(&a, &url, "x"), None);
    assert_eq!(
        open(&url, "other").get("x").unwrap().unwrap().value,
        json!(1)
    );
}

/// Exit 3 and one line on stderr.
#[track_caller]
fn missing(side: &Side, url: &str, args: &[&str], says: &str) {
    let r = var(side, url, args);
    assert_eq!(r.code, Some(3), "tape var {args:?}: {:?}", r.err);
    assert_eq!(r.err.len(), 1, "one line: {:?}", r.err);
    assert!(r.err[0].contains(says), "{:?} names {says:?}", r.err[0]);
    assert!(r.out.is_empty(), "nothing printed: {:?}", r.out);
}

/// Exit 1 and one line on stderr saying `says`.
#[track_caller]
fn refused(side: &Side, url: &str, args: &[&str], says: &str) -> String {
    let r = var(side, url, args);
    assert_eq!(r.code, Some(1), "tape var {args:?}: {:?}", r.err);
    assert_eq!(r.err.len(), 1, "one line: {:?}", r.err);
    assert!(r.err[0].contains(says), "{:?} says {says:?}", r.err[0]);
    r.err[0].clone()
}

#[test]
fn what_is_not_there_exits_3_and_bad_input_is_one_line_changing_nothing() {
    let a = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    missing(&a, &url, &["get", "nope"], "there is no variable nope");
    missing(&a, &url, &["del", "nope"], "nope");
    missing(&a, &url, &["dict-del", "nope", "k"], "nope");
    missing(&a, &url, &["list-pop", "nope"], "nope");
    missing(&a, &url, &["list-remove", "nope", "1"], "nope");
    var_ok(&a, &url, &["dict-set", "d", "k", "1"]);
    missing(&a, &url, &["dict-del", "d", "other"], "other");
    var_ok(&a, &url, &["list-push", "l", "1"]);
    missing(&a, &url, &["list-remove", "l", "2"], "2");
    var_ok(&a, &url, &["list-pop", "l"]);
    missing(&a, &url, &["list-pop", "l"], "empty");
    assert_eq!(var_get(&a, &url, "l"), Some(json!([])));

    var_ok(&a, &url, &["list-push", "l", "1"]);
    let vars = open(&url, "tape");
    let before = vars.last_revision().unwrap();
    let e = refused(&a, &url, &["put", "x", "{not json"], "not JSON");
    assert!(e.contains("{not json"), "names the input: {e}");
    refused(&a, &url, &["list-push", "l", "'single'"], "not JSON");
    refused(&a, &url, &["dict-set", "d", "k", ""], "not JSON");
    refused(&a, &url, &["list-push", "d", "1"], "not a list");
    refused(&a, &url, &["dict-set", "l", "k", "1"], "not an object");
    refused(&a, &url, &["list-pop", "l", "5"], "INDEX");
    refused(&a, &url, &["put", "a..b", "1"], "variable name");
    refused(&a, &url, &["put", "a*", "1"], "variable name");
    refused(&a, &url, &["ls", "a.>.b"], "pattern");
    refused(
        &a,
        &url,
        &["get", "x", "--bucket", "no.dots"],
        "bucket name",
    );
    let big = vars.put("big", &json!("x".repeat(1 << 20))).unwrap_err();
    assert!(big.to_string().contains("more than"), "{big}");
    assert_eq!(vars.last_revision().unwrap(), before, "nothing was written");
    assert_eq!(var_get(&a, &url, "x"), None);
    assert_eq!(var_get(&a, &url, "d"), Some(json!({"k": 1})));
    assert_eq!(var_get(&a, &url, "l"), Some(json!([1])));

    // Something else wrote bytes that are not JSON on a key: read back as a
    // string, and refused by a list operation with one line.
    let mut raw = Raw::connect(engine.port, None).unwrap();
    raw.request("$KV.tape.raw", b"hello \xff").unwrap();
    assert_eq!(var_get(&a, &url, "raw"), Some(json!("hello \u{fffd}")));
    refused(&a, &url, &["list-push", "raw", "1"], "holds a string");
    assert_eq!(var_get(&a, &url, "raw"), Some(json!("hello \u{fffd}")));
}

#[test]
fn a_wrong_token_is_one_line_naming_the_server_and_changes_nothing() {
    let a = Side::new();
    let engine = Engine::start(a.root.path(), Some("right-token-7"));
    let url = engine.url();
    let right = a.token_file("right-token-7");
    let right = right.to_str().unwrap();
    let wrong = a.token_file("wrong-token");
    let wrong = wrong.to_str().unwrap();
    var_ok(&a, &url, &["put", "x", "1", "--token-file", right]);
    let info = || {
        js_api_as(
            engine.port,
            Some("right-token-7"),
            "$JS.API.STREAM.INFO.KV_tape",
            "",
        )["state"]
            .clone()
    };
    let before = info();
    let root = a.root.arg().to_string();
    for args in [
        vec!["put", "x", "2"],
        vec!["get", "x"],
        vec!["list-push", "x", "3"],
        vec!["del", "x"],
        vec!["ls"],
        vec!["watch"],
        vec!["mirror", "--root", &root],
    ] {
        for auth in [vec!["--token-file", wrong], vec![]] {
            let mut all = args.clone();
            all.extend(&auth);
            let line = refused(&a, &url, &all, "refused the credentials");
            assert!(line.contains(&url), "names the server: {line}");
        }
    }
    assert_eq!(info(), before, "nothing changed on the server");
    assert!(
        std::fs::read_dir(a.root.journal_dir()).map_or(true, |d| d.count() == 0),
        "no mirror journal made"
    );
    let r = var(&a, &url, &["get", "x", "--token-file", right]);
    assert_eq!((r.code, r.out.trim()), (Some(0), "1"), "{:?}", r.err);
}
