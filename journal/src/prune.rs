//! Retention: deleting a journal's oldest pages, never one that a reader or
//! the writer has mapped, nor the page with the last frame.
//!
//! The guarantee is held by the kernel, not by bookkeeping: every process
//! that maps a page holds a shared `flock` on it (see [`crate::page`]), and
//! [`prune`] deletes a page only while it holds an exclusive `flock` on it,
//! taken without waiting. Pages are deleted oldest first and pruning stops
//! at the first page it cannot lock, so a reader that still reads page `k`
//! keeps `k` and every later page, and a process that dies (even by
//! SIGKILL) releases its locks with it. The protocol is in FORMAT.md,
//! "Pruning", so that readers in other languages follow it too.

use crate::files::page_path;
use crate::format::PAGE_HEADER_LEN;
use crate::locate::{first_frame_from, locate_tail, pages, retry_pruned, OpenError};
use crate::page::PageRef;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which old pages to delete. A page is deleted when any rule given asks
/// for it; with no rule, nothing is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneRule {
    /// Keep this many pages, counted back from the page with the last
    /// frame (pages made ahead after it are always kept and not counted).
    /// At least 1.
    pub keep_last: Option<u64>,
    /// Delete pages whose every frame is older than this (judged by the
    /// write time of the next page's first frame, which no frame of the
    /// page is newer than).
    pub older_than: Option<Duration>,
    /// Delete oldest pages while the journal's page files take more than
    /// this many bytes on disk.
    pub max_size: Option<u64>,
}

impl PruneRule {
    /// Whether the rule asks for anything.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && self.older_than.is_none() && self.max_size.is_none()
    }
}

/// A page that pruning had to keep because a process has it mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// The page number.
    pub page_no: u64,
    /// The page file.
    pub path: PathBuf,
    /// Pids holding a lock on it, from `/proc/locks` (empty when unknown).
    pub pids: Vec<u32>,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Pages deleted (or, with `dry_run`, that would be), oldest first.
    pub deleted: Vec<u64>,
    /// Bytes on disk those pages took.
    pub freed_bytes: u64,
    /// Pages the rule asked for.
    pub wanted: u64,
    /// The page where pruning stopped because a reader or the writer has
    /// it mapped (that page and every later one were kept).
    pub in_use: Option<InUse>,
    /// Page files left.
    pub pages_left: u64,
    /// Bytes on disk the page files left take.
    pub bytes_left: u64,
}

/// Why [`prune`] failed.
#[derive(Debug)]
pub enum PruneError {
    /// The journal could not be read.
    Open(OpenError),
    /// The rule is not allowed (the text says why).
    Rule(String),
    /// A page file could not be deleted (a permission, usually).
    Delete {
        /// The page file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl std::fmt::Display for PruneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PruneError::Open(e) => e.fmt(f),
            PruneError::Rule(why) => f.write_str(why),
            PruneError::Delete { path, source } => write!(
                f,
                "cannot delete {}: {source}; run as the journal's owner",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PruneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PruneError::Open(e) => Some(e),
            PruneError::Delete { source, .. } => Some(source),
            PruneError::Rule(_) => None,
        }
    }
}

impl From<OpenError> for PruneError {
    fn from(e: OpenError) -> Self {
        PruneError::Open(e)
    }
}

/// Deletes the oldest pages of journal `name` in `dir` that `rule` asks
/// for, oldest first, stopping at the first page a process has mapped
/// (see the module docs). Never deletes the page that holds the last frame
/// nor any page after it, so the sequence numbers of a journal survive any
/// rule. With `dry_run`, deletes nothing but reports what it would delete.
pub fn prune(
    dir: &Path,
    name: &str,
    rule: &PruneRule,
    dry_run: bool,
) -> Result<PruneReport, PruneError> {
    if rule.keep_last == Some(0) {
        return Err(PruneError::Rule(
            "keep-last 0 is not allowed: the page with the last frame is always kept, use 1 or more".into(),
        ));
    }
    let (first, wanted) = retry_pruned(|| select(dir, name, rule))?;
    let mut report = PruneReport {
        wanted,
        ..PruneReport::default()
    };
    for no in first..first + wanted {
        let path = page_path(dir, name, no);
        let file = match File::open(&path) {
            Ok(f) => f,
            // Another pruner got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(PruneError::Delete { path, source }),
        };
        if !lock_exclusive(&file).map_err(|source| PruneError::Delete {
            path: path.clone(),
            source,
        })? {
            let pids = lock_holders(&file);
            report.in_use = Some(InUse {
                page_no: no,
                path,
                pids,
            });
            break;
        }
        let meta = file.metadata().map_err(|source| PruneError::Delete {
            path: path.clone(),
            source,
        })?;
        if meta.nlink() == 0 {
            continue; // deleted by another pruner while we locked it
        }
        if !dry_run {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PruneError::Delete { path, source }),
            }
        }
        report.deleted.push(no);
        report.freed_bytes += meta.blocks() * 512;
        // Dropping the file releases the exclusive lock: a reader that
        // opened the page meanwhile finds it unlinked and lists again.
    }
    let left = retry_pruned(|| crate::locate::stats(dir, name))?;
    report.pages_left = left.pages;
    report.bytes_left = left.disk_bytes;
    if dry_run {
        report.pages_left -= report.deleted.len() as u64;
        report.bytes_left = report.bytes_left.saturating_sub(report.freed_bytes);
    }
    Ok(report)
}

/// The first page and how many pages from it the rule asks to delete.
fn select(dir: &Path, name: &str, rule: &PruneRule) -> Result<(u64, u64), OpenError> {
    let pages = pages(dir, name)?;
    let first = pages.numbers[0];
    let tail = locate_tail(dir, name, &pages, false)?;
    // The page with the last frame: the tail's page, or the page before it
    // when the tail is at the start of a page after an end-of-page marker.
    let mut keep_from =
        if tail.last.is_some() && tail.offset == PAGE_HEADER_LEN && tail.page_no > first {
            tail.page_no - 1
        } else {
            tail.page_no
        };
    // Pages skipped as too small hold no frame: the last frame is before
    // them (FORMAT.md, "Page sizes").
    while keep_from > first && tail.last.is_some() {
        let page = PageRef::open(dir, name, keep_from, Some(pages.geometry), false)?;
        if !crate::locate::page_is_skipped(page.bytes()) {
            break;
        }
        keep_from -= 1;
    }
    let most = keep_from.saturating_sub(first);
    let mut wanted = 0u64;
    if let Some(n) = rule.keep_last {
        wanted = wanted.max((keep_from + 1).saturating_sub(n).saturating_sub(first));
    }
    if let Some(age) = rule.older_than {
        let cutoff =
            crate::clock::now_ns().saturating_sub(age.as_nanos().min(i64::MAX as u128) as i64);
        let mut k = 0;
        while k < most {
            // Every frame of page first+k is no newer than the first frame
            // of the page after it.
            // (A page skipped as too small: the first frame after it.)
            match first_frame_from(dir, name, &pages, k as usize + 1)? {
                Some((_, t)) if t < cutoff => k += 1,
                _ => break,
            }
        }
        wanted = wanted.max(k);
    }
    if let Some(max) = rule.max_size {
        let mut sizes = Vec::with_capacity(pages.numbers.len());
        for &no in &pages.numbers {
            let path = page_path(dir, name, no);
            let meta = std::fs::metadata(&path).map_err(|source| OpenError::Io { path, source })?;
            sizes.push(meta.blocks() * 512);
        }
        let mut total: u64 = sizes.iter().sum();
        let mut k = 0;
        while k < most && total > max {
            total -= sizes[k as usize];
            k += 1;
        }
        wanted = wanted.max(k);
    }
    Ok((first, wanted.min(most)))
}

/// Takes the exclusive page lock without waiting: `Ok(false)` when a
/// process holds the shared one.
fn lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Pids that hold an `flock` on `file`, from `/proc/locks` (best effort).
fn lock_holders(file: &File) -> Vec<u32> {
    crate::files::flock_holders(file, false).unwrap_or_default()
}
