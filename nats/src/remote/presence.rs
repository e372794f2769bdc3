//! Who exposes what: each exposer's answer on `tape.online`, and
//! [`online()`], which asks them all.

use super::{RemoteError, GATHER_MAX, GATHER_QUIET, ONLINE_SUBJECT};
use crate::conn::{connect, Fail, Server};
use async_nats::StatusCode;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One exposer's answer on `tape.online`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposer {
    /// Its host name.
    pub host: String,
    /// The root whose responders it exposes.
    pub root: String,
    /// Its pid.
    pub pid: u32,
    /// The local requester it forwards calls through (journal
    /// `rpc.<requester>` on that root).
    pub requester: String,
    /// When it started, ns since the epoch.
    pub since_ns: i64,
    /// What it exposes.
    pub names: Vec<ExposedName>,
}

/// One name an exposer exposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedName {
    /// The responder's name.
    pub name: String,
    /// Whether a responder of that name is online on the exposer's root.
    pub online: bool,
    /// Its pid, when online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Since when it is online, ns since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<i64>,
}

/// One (machine, name) entry of [`online()`]: a name exposed by one
/// exposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposed {
    /// The responder's name.
    pub name: String,
    /// Whether its responder is online there.
    pub online: bool,
    /// The exposer's host name.
    pub host: String,
    /// The exposer's root.
    pub root: String,
    /// The exposer's pid.
    pub exposer_pid: u32,
    /// The responder's pid, when online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Since when the responder is online, ns since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ns: Option<i64>,
}

/// Asks every exposer reachable through `server` what it exposes: one
/// request on `tape.online`, answers gathered until [`GATHER_QUIET`]
/// passes without a new one (at most [`GATHER_MAX`]; at once when nobody
/// listens). Returns one entry per (exposer, name), sorted by name, then
/// host, root and exposer pid; answers that are not an exposer's are
/// skipped.
pub fn online(server: &Server) -> Result<Vec<Exposed>, RemoteError> {
    let rt = crate::runtime_here().map_err(RemoteError::Other)?;
    let conn = rt
        .block_on(connect(server, "tape online", crate::quiet_log()))
        .map_err(|f| match f {
            Fail::Fatal(e) => RemoteError::Other(e),
            Fail::Retry(e) => RemoteError::Other(format!("{e}: is nats-server running there?")),
        })?;
    let c = &conn.client;
    let answers: Vec<Exposer> = rt.block_on(async {
        let inbox = c.new_inbox();
        let mut sub = c
            .subscribe(inbox.clone())
            .await
            .map_err(|e| RemoteError::Other(format!("cannot subscribe to an inbox: {e}")))?;
        c.publish_with_reply(ONLINE_SUBJECT, inbox, bytes::Bytes::new())
            .await
            .map_err(|e| RemoteError::Other(format!("cannot ask who exposes what: {e}")))?;
        let start = Instant::now();
        let mut last = start;
        let mut got = Vec::new();
        loop {
            let now = Instant::now();
            let until = (last + GATHER_QUIET).min(start + GATHER_MAX);
            let wait = until.saturating_duration_since(now);
            if wait.is_zero() {
                break;
            }
            match tokio::time::timeout(wait, sub.next()).await {
                Ok(Some(m)) => {
                    if m.status == Some(StatusCode::NO_RESPONDERS) {
                        break;
                    }
                    if let Ok(e) = serde_json::from_slice::<Exposer>(&m.payload) {
                        got.push(e);
                    }
                    last = Instant::now();
                }
                Ok(None) => {
                    return Err(RemoteError::Other(
                        "the connection to the NATS server was closed".into(),
                    ))
                }
                Err(_) => break,
            }
        }
        Ok::<_, RemoteError>(got)
    })?;
    Ok(entries(answers))
}

/// Flattens answers into sorted entries.
fn entries(answers: Vec<Exposer>) -> Vec<Exposed> {
    let mut v: Vec<Exposed> = answers
        .into_iter()
        .flat_map(|e| {
            e.names.into_iter().map(move |n| Exposed {
                name: n.name,
                online: n.online,
                host: e.host.clone(),
                root: e.root.clone(),
                exposer_pid: e.pid,
                pid: n.pid,
                since_ns: n.since_ns,
            })
        })
        .collect();
    v.sort_by(|a, b| {
        (&a.name, &a.host, &a.root, a.exposer_pid).cmp(&(&b.name, &b.host, &b.root, b.exposer_pid))
    });
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_and_flat() {
        let e = |host: &str, pid, names: &[(&str, bool)]| Exposer {
            host: host.into(),
            root: "/r".into(),
            pid,
            requester: "tape-expose".into(),
            since_ns: 1,
            names: names
                .iter()
                .map(|(n, on)| ExposedName {
                    name: n.to_string(),
                    online: *on,
                    pid: on.then_some(7),
                    since_ns: None,
                })
                .collect(),
        };
        let v = entries(vec![
            e("b", 2, &[("x", true), ("a", false)]),
            e("a", 1, &[("x", false)]),
        ]);
        let got: Vec<(&str, &str, bool)> = v
            .iter()
            .map(|x| (x.name.as_str(), x.host.as_str(), x.online))
            .collect();
        assert_eq!(
            got,
            vec![("a", "b", false), ("x", "a", false), ("x", "b", true)]
        );
        let json = serde_json::to_string(&e("h", 3, &[("n", true)])).unwrap();
        let back: Exposer = serde_json::from_str(&json).unwrap();
        assert_eq!(back.names[0].pid, Some(7));
    }
}
