//! `tape online [NAME]`: who is registered with the service (writers,
//! readers, responders, requesters), with pid and since when.

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
