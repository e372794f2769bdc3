//! `tape online [NAME]`: who is registered with the service (writers,
//! readers, responders, requesters), with pid and since when; with
//! `--server URL`, the names exposed with `tape rpc expose` on every
//! machine.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use tape_service::{Client, Peer, PeerKind};

use crate::timefmt::format_rfc3339;

/// What `tape online` shows.
#[derive(Debug, Clone)]
pub enum Query {
    /// One peer by name.
    Find(String),
    /// A page of peers, by registration order.
    Page {
        /// Zero-based page.
        page: u64,
        /// Peers per page (1 to 1000).
        per_page: u32,
    },
    /// How many peers.
    Count,
}

/// A `tape online` of a name nobody registered: `main` exits with
/// [`EXIT_NO`](super::call::EXIT_NO).
#[derive(Debug)]
pub struct NotOnline(pub String);

impl std::fmt::Display for NotOnline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nothing named {} is online: list who is with `tape online`",
            self.0
        )
    }
}

impl std::error::Error for NotOnline {}

/// One line of `tape online --json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    id: u64,
    kind: &'static str,
    name: &'a str,
    pid: u32,
    since_ns: i64,
    since: String,
    /// For responders and requesters: the id in frames' source and dest.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_id: Option<u32>,
    journals: Vec<String>,
}

fn kind(k: PeerKind) -> &'static str {
    match k {
        PeerKind::Writer => "writer",
        PeerKind::Reader => "reader",
        PeerKind::Responder => "responder",
        PeerKind::Requester => "requester",
        _ => "other",
    }
}

fn line(p: &Peer) -> Line<'_> {
    let endpoint = matches!(p.kind, PeerKind::Responder | PeerKind::Requester);
    Line {
        id: p.id,
        kind: kind(p.kind),
        name: &p.name,
        pid: p.pid,
        since_ns: p.since_ns,
        since: format_rfc3339(p.since_ns),
        endpoint_id: endpoint.then(|| tape_rpc::endpoint_id(&p.name)),
        journals: p
            .journals
            .iter()
            .map(|j| j.dir.join(&j.journal).display().to_string())
            .collect(),
    }
}

/// Asks the service of `root` and prints the answer: a table, or one JSON
/// object a line with `json`.
pub fn run(root: &Path, query: &Query, json: bool, out: &mut dyn Write) -> Result<()> {
    let mut c = Client::connect(root)?;
    let peers = match query {
        Query::Count => {
            let n = c.count().context("cannot count who is online")?;
            if json {
                writeln!(out, "{}", serde_json::json!({ "count": n }))?;
            } else {
                writeln!(out, "{n}")?;
            }
            return Ok(());
        }
        Query::Find(name) => {
            let found = match c.find_endpoint(name)? {
                Some(p) => Some(p),
                None => c.find(name)?,
            };
            match found {
                Some(p) => vec![p],
                None => return Err(NotOnline(name.clone()).into()),
            }
        }
        Query::Page { page, per_page } => c.list(*page, *per_page)?,
    };
    if json {
        for p in &peers {
            serde_json::to_writer(&mut *out, &line(p))?;
            writeln!(out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<9}  {:<24}  {:>8}  {:<30}  JOURNALS",
        "ID", "KIND", "NAME", "PID", "SINCE"
    )?;
    for p in &peers {
        let l = line(p);
        let journals = if l.journals.is_empty() {
            "-".to_string()
        } else {
            l.journals.join(",")
        };
        writeln!(
            out,
            "{:>6}  {:<9}  {:<24}  {:>8}  {:<30}  {}",
            l.id, l.kind, l.name, l.pid, l.since, journals
        )?;
    }
    Ok(())
}

/// One line of `tape online --server URL --json`.
#[derive(Debug, Serialize)]
struct RemoteLine<'a> {
    #[serde(flatten)]
    entry: &'a tape_nats::remote::Exposed,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
}

/// [`run`] across machines: asks every exposer reachable through
/// `server` (`tape rpc expose`) and shows one entry per (machine, name),
/// sorted by name, then host. `Find`: that name's entries, exit 3 when no
/// machine has it online; `Count`: the number of entries (`--json`: also
/// how many are online).
pub fn run_remote(
    server: &tape_nats::Server,
    query: &Query,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let all = tape_nats::remote::online(server)?;
    let shown: Vec<&tape_nats::remote::Exposed> = match query {
        Query::Count => {
            let online = all.iter().filter(|e| e.online).count();
            if json {
                let v = serde_json::json!({ "count": all.len(), "online": online });
                writeln!(out, "{v}")?;
            } else {
                writeln!(out, "{}", all.len())?;
            }
            return Ok(());
        }
        Query::Find(name) => all.iter().filter(|e| &e.name == name).collect(),
        Query::Page { page, per_page } => all
            .iter()
            .skip((*page as usize).saturating_mul(*per_page as usize))
            .take(*per_page as usize)
            .collect(),
    };
    if json {
        for e in &shown {
            let l = RemoteLine {
                entry: e,
                since: e.since_ns.map(format_rfc3339),
            };
            serde_json::to_writer(&mut *out, &l)?;
            writeln!(out)?;
        }
    } else {
        writeln!(
            out,
            "{:<24}  {:<6}  {:<16}  {:>8}  {:>8}  ROOT",
            "NAME", "ONLINE", "HOST", "PID", "EXPOSER"
        )?;
        for e in &shown {
            let pid = e.pid.map_or("-".to_string(), |p| p.to_string());
            let on = if e.online { "yes" } else { "no" };
            writeln!(
                out,
                "{:<24}  {:<6}  {:<16}  {:>8}  {:>8}  {}",
                e.name, on, e.host, pid, e.exposer_pid, e.root
            )?;
        }
    }
    if let Query::Find(name) = query {
        if !shown.iter().any(|e| e.online) {
            out.flush()?;
            let no = tape_nats::RemoteError::No {
                dest: name.clone(),
                host: None,
            };
            return Err(super::call::Unanswered::Remote(no).into());
        }
    }
    Ok(())
}
