//! `tape var watch` prints every change once, in revision order, also
//! across a server restart; `tape var mirror` writes them into the local
//! journal `var.<bucket>` with increasing seq, and resumes where it
//! stopped.

use super::*;
use crate::bridge::setup::Side;
use crate::nats::engine::*;
use serde_json::{json, Value};
use tape_nats::Change;

/// One change made, and the revision when the library told it.
struct Made {
    name: &'static str,
    op: &'static str,
    value: Value,
    revision: Option<u64>,
}

fn made(name: &'static str, op: &'static str, value: Value, revision: Option<u64>) -> Made {
    Made {
        name,
        op,
        value,
        revision,
    }
}

/// Some changes of every kind, from the library (revision known) and from
/// the CLI of side `side`; `tag` makes the values of each batch unique.
fn changes(vars: &Vars, side: &Side, url: &str, tag: u64) -> Vec<Made> {
    let t = tag as i64;
    let mut v = Vec::new();
    let r = vars.put("risk.limit", &json!(t)).unwrap();
    v.push(made("risk.limit", "put", json!(t), Some(r)));
    var_ok(side, url, &["put", "risk.max", &format!("{{\"n\":{t}}}")]);
    v.push(made("risk.max", "put", json!({ "n": t }), None));
    let r = vars.list_push("orders", &json!(t)).unwrap();
    v.push(made("orders", "put", json!([t]), Some(r)));
    var_ok(side, url, &["list-push", "orders", &(t + 1).to_string()]);
    v.push(made("orders", "put", json!([t, t + 1]), None));
    let r = vars.dict_set("pos", "a", &json!(t)).unwrap();
    v.push(made("pos", "put", json!({ "a": t }), Some(r)));
    vars.list_pop("orders", Some(0)).unwrap();
    v.push(made("orders", "put", json!([t + 1]), None));
    let r = vars.del("orders").unwrap();
    v.push(made("orders", "del", Value::Null, Some(r)));
    var_ok(side, url, &["del", "pos"]);
    v.push(made("pos", "del", Value::Null, None));
    v
}

/// Reads one `watch` line.
fn change(lines: &Lines, d: &Deadline) -> Change {
    let l = lines.next(d, "a watch line").expect("watch ended");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("watch printed {l:?}: {e}"))
}

/// Checks the changes seen against those made, in order.
#[track_caller]
fn same(seen: &[Change], made: &[Made]) {
    assert_eq!(seen.len(), made.len());
    for (s, m) in seen.iter().zip(made) {
        assert_eq!(
            (s.name.as_str(), s.op.as_str(), &s.value),
            (m.name, m.op, &m.value),
            "change {s:?}"
        );
        if let Some(r) = m.revision {
            assert_eq!(s.revision, r, "{s:?}");
        }
        assert!(s.time_ns > 0);
    }
    assert!(
        seen.windows(2).all(|w| w[0].revision < w[1].revision),
        "revisions increase: {:?}",
        seen.iter().map(|c| c.revision).collect::<Vec<_>>()
    );
}

#[test]
fn watch_sees_every_change_once_and_in_order_across_a_server_restart() {
    let a = Side::new();
    let b = Side::new();
    let mut engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let vars = open(&url, "tape");
    // Before the watch: not printed.
    vars.put("risk.limit", &json!("before")).unwrap();
    let all = Follower::start(&b, &url, &["watch"], "watching");
    let risk = Follower::start(&b, &url, &["watch", "risk.*"], "watching");
    let d = Deadline::after(std::time::Duration::from_secs(120));

    let mut want = changes(&vars, &a, &url, 10);
    let seen: Vec<Change> = (0..want.len()).map(|_| change(&all.lines, &d)).collect();
    same(&seen, &want);

    // The server goes away and comes back (same store): the watches make
    // their consumers again after the last revision they printed.
    engine.kill9();
    engine.restart();
    engine.wait_ready();
    drop(vars);
    let vars = open(&url, "tape");
    let more = changes(&vars, &a, &url, 20);
    // A last change: the line after the others must be this one, so
    // nothing came twice.
    let r = vars.put("end", &json!(true)).unwrap();
    let n = more.len();
    want.extend(more);
    want.push(made("end", "put", json!(true), Some(r)));
    let seen2: Vec<Change> = (0..n + 1).map(|_| change(&all.lines, &d)).collect();
    let mut every = seen;
    every.extend(seen2);
    same(&every, &want);
    all.log.wait_for("the watch to say it watched again", |l| {
        l.contains("watching again")
    });

    // The pattern: only risk.*, the same way.
    let want_risk: Vec<Made> = want
        .into_iter()
        .filter(|m| m.name.starts_with("risk."))
        .collect();
    let seen_risk: Vec<Change> = (0..want_risk.len())
        .map(|_| change(&risk.lines, &d))
        .collect();
    same(&seen_risk, &want_risk);
    let r = vars.put("risk.end", &json!(1)).unwrap();
    assert_eq!(change(&risk.lines, &d).revision, r, "nothing else came");
}

/// The mirror journal's frames as `tape tail --format json` prints them:
/// (seq, corr, the change).
fn mirrored(side: &Side) -> Vec<(u64, u64, Change)> {
    tail_json(&side.root, &["var.tape"])
        .into_iter()
        .map(|f| {
            let c: Change = serde_json::from_str(f["payload"].as_str().expect("text payload"))
                .expect("the payload is a change");
            (f["seq"].as_u64().unwrap(), f["corr"].as_u64().unwrap(), c)
        })
        .collect()
}

#[test]
fn the_mirror_journal_holds_every_change_with_increasing_seq_and_resumes() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let vars = open(&url, "tape");
    let r1 = vars.put("cfg.mode", &json!("live")).unwrap();
    let r2 = vars.list_push("jobs", &json!(1)).unwrap();
    vars.put("gone", &json!(0)).unwrap();
    vars.del("gone").unwrap();

    let root_b = b.root.arg().to_string();
    let mut m = Follower::start(&b, &url, &["mirror", "--root", &root_b], "mirroring");
    // A new journal starts with the current values.
    b.wait_seq("var.tape", 2);
    let mut want = vec![
        made("cfg.mode", "put", json!("live"), Some(r1)),
        made("jobs", "put", json!([1]), Some(r2)),
    ];
    want.extend(changes(&vars, &a, &url, 30));
    b.wait_seq("var.tape", want.len() as u64);
    let check = |want: &[Made]| {
        let got = mirrored(&b);
        let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, (1..=want.len() as u64).collect::<Vec<_>>());
        assert!(
            got.iter().all(|g| g.1 == g.2.revision),
            "corr is the revision"
        );
        let ch: Vec<Change> = got.into_iter().map(|g| g.2).collect();
        same(&ch, want);
    };
    check(&want);

    // Stopped, changes made meanwhile, started again: it resumes after the
    // last revision it holds.
    m.kid.kill9();
    want.extend(changes(&vars, &a, &url, 40));
    m = Follower::start(&b, &url, &["mirror", "--root", &root_b], "mirroring");
    let r = vars.put("end", &json!(1)).unwrap();
    want.push(made("end", "put", json!(1), Some(r)));
    b.wait_seq("var.tape", want.len() as u64);
    check(&want);
    drop(m);
}
