//! `tape var` and `tape_nats::Vars` against a real `nats-server -js`, with
//! two roots standing for two machines (each with its own `tape service`,
//! which only the mirror needs): the CLI runs with `TAPE_ROOT` set to its
//! side's root, the library in the test process or in role processes (the
//! test binary run again, [`roles`]).
//!
//! No test asserts a duration: every wait has a watchdog deadline.

mod cli;
mod concurrent;
mod follow;
pub mod roles;

use crate::bridge::setup::Side;
use crate::common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use tape_nats::{Auth, Server, Vars, VarsOptions};

/// `tape var <args> --server <url>` as side `side` runs it.
pub fn var_cmd(side: &Side, url: &str, args: &[&str]) -> Command {
    let mut cmd = tape(&["var"]);
    cmd.args(args)
        .args(["--server", url])
        .env("TAPE_ROOT", side.root.path())
        .env_remove("TAPE_NATS");
    cmd
}

/// What one `tape var` run did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub out: String,
    pub err: Vec<String>,
}

/// Runs `tape var <args>` to its end.
pub fn var(side: &Side, url: &str, args: &[&str]) -> Ran {
    let o = run(&mut var_cmd(side, url, args), b"");
    Ran {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

/// Runs `tape var <args>`, which must exit 0; returns its stdout.
#[track_caller]
pub fn var_ok(side: &Side, url: &str, args: &[&str]) -> String {
    let r = var(side, url, args);
    assert_eq!(r.code, Some(0), "tape var {args:?}: {:?}", r.err);
    r.out
}

/// `tape var get NAME` parsed; `None` when it exits 3 (no such variable).
#[track_caller]
pub fn var_get(side: &Side, url: &str, name: &str) -> Option<serde_json::Value> {
    let r = var(side, url, &["get", name]);
    match r.code {
        Some(0) => {
            Some(serde_json::from_str(r.out.trim()).unwrap_or_else(|e| {
                panic!("tape var get {name} printed {:?}, not JSON: {e}", r.out)
            }))
        }
        Some(3) => None,
        c => panic!("tape var get {name} exited {c:?}: {:?}", r.err),
    }
}

/// The library, connected to `url` (no credentials), bucket `bucket`.
pub fn open(url: &str, bucket: &str) -> Vars {
    let mut o = VarsOptions::new(Server {
        url: url.to_string(),
        auth: Auth::None,
    });
    o.bucket = bucket.to_string();
    o.timeout = Duration::from_secs(60);
    Vars::open(o).expect("open the bucket")
}

/// A `tape var watch`/`mirror` running on `side`: its stdout lines and
/// its stderr log.
pub struct Follower {
    pub kid: Kid,
    pub lines: Lines,
    pub log: crate::bridge::setup::Log,
}

impl Follower {
    /// Starts `tape var <args>` and waits for its stderr line naming
    /// `ready` (it follows the bucket from then on).
    pub fn start(side: &Side, url: &str, args: &[&str], ready: &str) -> Follower {
        let mut kid = Kid::spawn(
            &format!("tape var {args:?}"),
            var_cmd(side, url, args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let lines = Lines::of(kid.child.stdout.take().unwrap());
        let log = crate::bridge::setup::Log::of(kid.child.stderr.take().unwrap(), "var");
        let r = ready.to_string();
        log.wait_for(ready, move |l| l.contains(&r));
        Follower { kid, lines, log }
    }
}
