//! `tape ls`: each journal of a root with its pages, frames, last
//! sequence, size on disk, writer and readers.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// One line of `tape ls`.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Journal name.
    pub journal: String,
    /// Page files.
    pub pages: u64,
    /// Size of the last page in bytes (a journal's pages grow, from 1 MiB
    /// to its largest page size).
    pub page_size: u64,
    /// The journal's largest page size in bytes.
    pub max_page_size: u64,
    /// The journal's format version (journal/FORMAT.md; 0 when unknown).
    pub format_version: u32,
    /// Frames on disk.
    pub frames: u64,
    /// Last sequence number (0: none).
    pub last_seq: u64,
    /// Sequence number of the first frame on disk (above 1 once old pages
    /// were pruned; 0: none).
    pub first_seq: u64,
    /// Number of the first page on disk (above 1 once pruned).
    pub first_page: u64,
    /// Bytes the page files take on disk.
    pub disk_bytes: u64,
    /// Pid of the writer, if one runs.
    pub writer_pid: Option<u32>,
    /// Registered readers, as `name(pid)`.
    pub readers: Vec<String>,
    /// Why the journal could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Collects the entries for every journal in `dir`; writer and readers
/// come from the service of `root` when one runs, else the writer from the
/// journal's lock.
pub fn entries(root: &Path, dir: &Path) -> Result<Vec<Entry>> {
    let names = match tape_journal::list_journals(dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let registered = crate::watch::Registrations::fetch(root, dir);
    let mut out = Vec::new();
    for name in names {
        let writer_pid = registered.writer_pid(&name);
        let readers = registered
            .get(&name)
            .map(|i| {
                i.readers
                    .iter()
                    .map(|r| format!("{}({})", r.name, r.pid))
                    .collect()
            })
            .unwrap_or_default();
        let mut e = Entry {
            journal: name.clone(),
            pages: 0,
            page_size: 0,
            max_page_size: 0,
            format_version: 0,
            frames: 0,
            last_seq: 0,
            first_seq: 0,
            first_page: 0,
            disk_bytes: 0,
            writer_pid,
            readers,
            error: None,
        };
        match tape_journal::stats(dir, &name) {
            Ok(s) => {
                e.pages = s.pages;
                e.page_size = s.page_size;
                e.max_page_size = s.max_page_size;
                e.format_version = s.version;
                e.frames = s.frames;
                e.last_seq = s.last_seq;
                e.first_seq = s.first_seq;
                e.first_page = s.first_page;
                e.disk_bytes = s.disk_bytes;
            }
            Err(err) => e.error = Some(err.to_string()),
        }
        out.push(e);
    }
    Ok(out)
}

/// `bytes` for people: `512 B`, `1.5 MiB`, ...
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints the journals of `dir` as a table or JSON lines.
pub fn run(root: &Path, dir: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let entries = entries(root, dir)?;
    if json {
        for e in &entries {
            serde_json::to_writer(&mut *out, e)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<20} {:>6} {:>12} {:>12} {:>10} {:>8}  READERS",
        "JOURNAL", "PAGES", "FRAMES", "LAST_SEQ", "DISK", "WRITER"
    )?;
    for e in &entries {
        let writer = e
            .writer_pid
            .map_or_else(|| "none".to_string(), |p| p.to_string());
        let readers = if e.readers.is_empty() {
            "-".to_string()
        } else {
            e.readers.join(",")
        };
        write!(
            out,
            "{:<20} {:>6} {:>12} {:>12} {:>10} {:>8}  {}",
            e.journal,
            e.pages,
            e.frames,
            e.last_seq,
            human(e.disk_bytes),
            writer,
            readers
        )?;
        if let Some(err) = &e.error {
            write!(out, "  error: {err}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
