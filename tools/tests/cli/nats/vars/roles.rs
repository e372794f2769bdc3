//! The test binary run again as a process of `tape_nats::Vars`: a pusher
//! that appends its own values to one list and says, for each, whether it
//! was acknowledged.

use std::io::Write;
use std::process::{Command, Stdio};
use tape_nats::{Auth, Server, Vars, VarsOptions};

const ROLE: &str = "TAPE_VAR_ROLE";
const ARG: &str = "TAPE_VAR_ARG";

/// The command of role `role` with argument `arg` (stdout piped: one line
/// per outcome).
pub fn command(role: &str, arg: &str) -> Command {
    let mut cmd = tape_testkit::role_command(
        "nats::vars::roles::var_role",
        ROLE,
        role,
        &[(ARG, std::ffi::OsStr::new(arg))],
    );
    cmd.stdout(Stdio::piped());
    cmd
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that stopped listening is not this role's business.
    let _ = writeln!(out, "VAR {line}");
    let _ = out.flush();
}

/// Not a test of its own: passes at once unless `TAPE_VAR_ROLE` is set.
#[test]
fn var_role() {
    let Some(role) = tape_testkit::role(ROLE) else {
        return;
    };
    let arg = std::env::var(ARG).unwrap_or_default();
    match role.as_str() {
        "pusher" => pusher(&arg),
        other => panic!("unknown role {other}"),
    }
}

/// `URL LIST WORKER COUNT`: pushes `"WORKER-0"`, `"WORKER-1"`, ... onto
/// LIST, printing `ok ITEM` when acknowledged and `err ITEM MESSAGE` when
/// the push failed; `done` at the end.
fn pusher(arg: &str) {
    let a: Vec<&str> = arg.split(' ').collect();
    let (url, list, worker, count) = (a[0], a[1], a[2], a[3].parse::<u64>().unwrap());
    let mut o = VarsOptions::new(Server {
        url: url.to_string(),
        auth: Auth::None,
    });
    o.timeout = std::time::Duration::from_secs(60);
    o.log = tape_nats::stderr_log("pusher");
    let vars = Vars::open(o).expect("open the bucket");
    say("ready");
    for i in 0..count {
        let item = format!("{worker}-{i}");
        match vars.list_push(list, &serde_json::json!(item)) {
            Ok(_) => say(&format!("ok {item}")),
            Err(e) => say(&format!("err {item} {e}")),
        }
    }
    say("done");
}
