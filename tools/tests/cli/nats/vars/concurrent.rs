//! Many processes changing one variable at once lose nothing: every change
//! is a compare-and-set on the key's revision, retried on conflict; and a
//! server SIGKILLed and restarted in the middle loses no acknowledged
//! change and applies none twice.

use super::*;
use crate::bridge::setup::Side;
use crate::nats::engine::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

/// `workers` threads, each running `per` `tape var` processes one after
/// the other (`args(worker, i)`) on side `worker % sides.len()`, all
/// starting together; every run must exit 0.
fn at_once(
    sides: &[&Side],
    url: &str,
    workers: usize,
    per: usize,
    args: impl Fn(usize, usize) -> Vec<String> + Send + Sync + 'static,
) {
    let args = Arc::new(args);
    let go = Arc::new(Barrier::new(workers));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (args, go) = (Arc::clone(&args), Arc::clone(&go));
            let url = url.to_string();
            let root = sides[w % sides.len()].root.path().to_path_buf();
            std::thread::spawn(move || {
                go.wait();
                for i in 0..per {
                    let a = args(w, i);
                    let mut cmd = tape(&["var"]);
                    cmd.args(&a)
                        .args(["--server", &url])
                        .env("TAPE_ROOT", &root);
                    let o = run(&mut cmd, b"");
                    assert!(
                        o.status.success(),
                        "tape var {a:?} exited {}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a worker failed");
    }
}

#[test]
fn four_processes_pushing_250_each_at_once_make_exactly_1000_items() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    // Two workers on each "machine".
    at_once(&[&a, &b], &url, 4, 250, |w, i| {
        vec!["list-push".into(), "jobs".into(), format!("\"w{w}-{i}\"")]
    });
    let items = open(&url, "tape").get("jobs").unwrap().expect("jobs").value;
    let items: Vec<String> = items
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("strings").to_string())
        .collect();
    assert_eq!(items.len(), 1000, "exactly 1000 items");
    let set: BTreeSet<&String> = items.iter().collect();
    assert_eq!(set.len(), 1000, "each item once");
    for w in 0..4 {
        // Each worker's items are all there, in the order it pushed them.
        let mine: Vec<&String> = items
            .iter()
            .filter(|s| s.starts_with(&format!("w{w}-")))
            .collect();
        let want: Vec<String> = (0..250).map(|i| format!("w{w}-{i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>(), "worker {w}");
    }
}

#[test]
fn two_processes_setting_keys_of_one_dict_at_once_keep_every_key() {
    let a = Side::new();
    let b = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    at_once(&[&a, &b], &url, 2, 100, |w, i| {
        vec![
            "dict-set".into(),
            "book".into(),
            format!("k{w}-{i}"),
            format!("{{\"w\":{w},\"i\":{i}}}"),
        ]
    });
    let book = open(&url, "tape").get("book").unwrap().expect("book").value;
    let book = book.as_object().expect("an object");
    assert_eq!(book.len(), 200, "both processes' keys: {}", book.len());
    for w in 0..2 {
        for i in 0..100 {
            assert_eq!(book[&format!("k{w}-{i}")], json!({"w": w, "i": i}));
        }
    }
}

#[test]
fn one_library_connection_shared_by_four_threads_pushing_at_once_loses_nothing() {
    let a = Side::new();
    let engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let vars = Arc::new(open(&url, "tape"));
    let go = Arc::new(Barrier::new(4));
    let hs: Vec<_> = (0..4)
        .map(|w| {
            let (vars, go) = (Arc::clone(&vars), Arc::clone(&go));
            std::thread::spawn(move || {
                go.wait();
                for i in 0..100 {
                    vars.list_push("jobs", &json!(format!("t{w}-{i}"))).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("a pushing thread failed");
    }
    let items = vars.get("jobs").unwrap().expect("jobs").value;
    let set: BTreeSet<String> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(items.as_array().unwrap().len(), 400);
    assert_eq!(set.len(), 400, "each item once");
}

/// A pusher role process and what it said.
struct Pusher {
    kid: Kid,
    lines: Lines,
    ok: Vec<String>,
    err: Vec<String>,
    done: bool,
}

impl Pusher {
    fn start(url: &str, worker: usize, count: usize) -> Pusher {
        let mut kid = Kid::spawn(
            "pusher",
            &mut super::roles::command("pusher", &format!("{url} jobs p{worker} {count}")),
        );
        let lines = Lines::of(kid.child.stdout.take().unwrap());
        Pusher {
            kid,
            lines,
            ok: Vec::new(),
            err: Vec::new(),
            done: false,
        }
    }

    /// Reads what it said until `until` holds or it is done.
    fn read(&mut self, d: &Deadline, until: impl Fn(&Pusher) -> bool) {
        while !self.done && !until(self) {
            let Some(l) = self.lines.next(d, "a pusher's line") else {
                panic!("a pusher ended without saying done");
            };
            let Some(l) = l.strip_prefix("VAR ") else {
                continue;
            };
            if let Some(item) = l.strip_prefix("ok ") {
                self.ok.push(item.to_string());
            } else if let Some(rest) = l.strip_prefix("err ") {
                eprintln!("pusher: {rest}");
                self.err.push(rest.split(' ').next().unwrap().to_string());
            } else if l == "done" {
                self.done = true;
            }
        }
    }
}

#[test]
fn nats_server_killed_mid_way_loses_no_acknowledged_push_and_doubles_none() {
    let a = Side::new();
    let mut engine = Engine::start(a.root.path(), None);
    let url = engine.url();
    let (workers, count) = (4usize, 300usize);
    let mut ps: Vec<Pusher> = (0..workers)
        .map(|w| Pusher::start(&url, w, count))
        .collect();
    let d = Deadline::after(std::time::Duration::from_secs(300));
    // Two kills: once every pusher is through a sixth of its pushes, and
    // through half; each still has pushes to make, so all are busy.
    for (k, at) in [(1, count / 6), (2, count / 2)] {
        for p in &mut ps {
            p.read(&d, |p| p.ok.len() + p.err.len() >= at);
        }
        let total: usize = ps.iter().map(|p| p.ok.len()).sum();
        eprintln!("kill {k}: {total} pushes acknowledged so far");
        engine.kill9();
        engine.restart();
        engine.wait_ready();
    }
    for p in &mut ps {
        p.read(&d, |_| false);
        let s = p.kid.wait();
        assert!(s.success(), "a pusher exited {s}");
    }
    let list = open(&url, "tape").get("jobs").unwrap().expect("jobs").value;
    let items: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("strings"))
        .collect();
    let mut seen = BTreeMap::new();
    for it in &items {
        *seen.entry(*it).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "items twice: {twice:?}");
    let mut acked = 0;
    let mut failed_in = 0;
    for (w, p) in ps.iter().enumerate() {
        for item in &p.ok {
            assert!(seen.contains_key(item.as_str()), "acknowledged {item} lost");
            acked += 1;
        }
        failed_in += p
            .err
            .iter()
            .filter(|i| seen.contains_key(i.as_str()))
            .count();
        assert_eq!(
            p.ok.len() + p.err.len(),
            count,
            "pusher {w} said of each push"
        );
        // A worker's items are in the order it pushed them.
        let prefix = format!("p{w}-");
        let order: Vec<usize> = items
            .iter()
            .filter_map(|i| i.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|x| x[0] < x[1]),
            "pusher {w}: {order:?}"
        );
    }
    for it in &items {
        let known = ps
            .iter()
            .any(|p| p.ok.iter().chain(&p.err).any(|x| x == it));
        assert!(known, "{it} in the list was never pushed");
    }
    let errs: usize = ps.iter().map(|p| p.err.len()).sum();
    assert_eq!(items.len(), acked + failed_in);
    eprintln!(
        "{acked} acknowledged, all in once; {errs} failed ({failed_in} of them in the list anyway)"
    );
}
