//! The typed example pair through real processes: a strategy started first
//! reads two journals that two market-data writers fill at the same time,
//! and reports every tick it viewed in place equal to what was written.

use std::io::Read;
use std::process::{Command, Stdio};
use tape_examples::tick;
use tape_testkit::{harden, Deadline, Kid, Root};

fn bin(name: &str, root: &Root) -> Command {
    let path = match name {
        "typed-md" => env!("CARGO_BIN_EXE_typed-md"),
        _ => env!("CARGO_BIN_EXE_typed-strategy"),
    };
    let mut cmd = Command::new(path);
    cmd.env("TAPE_ROOT", root.path());
    harden(&mut cmd);
    cmd
}

/// What `typed-strategy` must print for a feed of `venue` that sent `n`
/// ticks.
fn expected(journal: &str, venue: &str, n: u64) -> String {
    let (mut trades, mut volume, mut notional) = (0u64, 0i64, 0i128);
    for i in 1..=n {
        let t = tick(venue, i);
        if t.flags & 1 != 0 {
            trades += 1;
            volume += t.qty;
            notional += t.px as i128 * t.qty as i128;
        }
    }
    let last = tick(venue, n);
    format!(
        "{journal} venue={venue} ticks={n} trades={trades} volume={volume} vwap={:.2} last={}@{:.2} checked={n} closed_after={n}",
        notional as f64 / volume as f64 / 100.0,
        tape_examples::symbol(&last),
        last.px as f64 / 100.0
    )
}

#[test]
fn the_typed_strategy_reads_what_two_typed_writers_write() {
    let root = Root::new();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let deadline = Deadline::secs(120);
    // The strategy first: the journals do not exist yet, it waits for them.
    let mut strategy = Kid::spawn(
        "typed-strategy",
        bin("typed-strategy", &root)
            .args(["md.cme", "md.eurex"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut writers: Vec<Kid> = [("md.cme", "CME", "20000"), ("md.eurex", "EUREX", "15000")]
        .iter()
        .map(|(j, v, n)| {
            Kid::spawn(
                "typed-md",
                bin("typed-md", &root)
                    .args([j, v, n])
                    .stdout(Stdio::piped()),
            )
        })
        .collect();
    let mut said = Vec::new();
    for w in &mut writers {
        assert!(w.wait_until(&deadline).success());
        let mut out = String::new();
        w.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        said.push(out);
    }
    assert!(
        said[0].contains("md.cme: wrote 20000 ticks from CME, last seq 20002"),
        "{said:?}"
    );
    assert!(
        said[1].contains("md.eurex: wrote 15000 ticks from EUREX, last seq 15002"),
        "{said:?}"
    );

    let status = strategy.wait_until(&deadline);
    let mut out = String::new();
    strategy
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    strategy
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            expected("md.cme", "CME", 20000).as_str(),
            expected("md.eurex", "EUREX", 15000).as_str()
        ],
        "stderr: {err}"
    );
    assert!(err.is_empty(), "{err}");
}

#[test]
fn the_strategy_names_what_it_cannot_read() {
    let root = Root::new();
    let out = bin("typed-strategy", &root).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("name one or more journals"));
    let out = bin("typed-md", &root).args(["md"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: typed-md JOURNAL VENUE"));
}
