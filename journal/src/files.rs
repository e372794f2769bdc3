//! Journal names, page file names, listing a journal's pages, the writer lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of every page file: `<name>.<page_no:08>.journal`.
pub const PAGE_SUFFIX: &str = ".journal";
/// Suffix of the writer lock file: `<name>.lock`.
pub const LOCK_SUFFIX: &str = ".lock";
/// Longest journal name.
pub const MAX_NAME_LEN: usize = 64;
/// Environment variable naming the root when `--root` is not given.
pub const ROOT_ENV: &str = "TAPE_ROOT";
/// Root used when neither `--root` nor `$TAPE_ROOT` is given.
pub const DEFAULT_ROOT: &str = "/tmp/trading";

/// The root: `arg` if given, else `$TAPE_ROOT` if set and not empty, else
/// `/tmp/trading`.
pub fn resolve_root(arg: Option<&Path>) -> PathBuf {
    if let Some(p) = arg {
        return p.to_path_buf();
    }
    match std::env::var_os(ROOT_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}

/// The root a journal folder belongs to: the nearest of `dir` and its
/// parents that has a service's files (`system/service.sock` or
/// `system/service.lock`), so that `<R>/journal`, `<R>/journal/archive`
/// or `<R>` itself all belong to root `<R>` once a service has run there.
/// `None` when no such folder is above `dir` (a relative `dir` is taken
/// from the current folder).
///
/// A `Writer` or `Reader` given only a folder registers with the service
/// of this root, else with the default root ([`resolve_root`]`(None)`).
pub fn root_of(dir: &Path) -> Option<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(dir)
    };
    abs.ancestors()
        .find(|a| {
            let system = a.join("system");
            system.join("service.sock").exists() || system.join("service.lock").exists()
        })
        .map(Path::to_path_buf)
}

/// Folder of a root's journals: `<root>/journal`.
pub fn journal_dir(root: &Path) -> PathBuf {
    root.join("journal")
}

/// A journal name that is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bad journal name {:?}: use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 _ - . not starting with a dot",
            self.0
        )
    }
}

impl std::error::Error for BadName {}

/// Checks a journal name: 1 to 64 of `A-Z a-z 0-9 _ - .`, not starting
/// with `.`.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BadName(name.to_string()))
    }
}

/// Path of page `page_no` of journal `name` in `dir`.
pub fn page_path(dir: &Path, name: &str, page_no: u64) -> PathBuf {
    dir.join(format!("{name}.{page_no:08}{PAGE_SUFFIX}"))
}

/// Path under which a page is built before it is renamed into place.
pub(crate) fn page_tmp_path(dir: &Path, name: &str, page_no: u64) -> PathBuf {
    dir.join(format!(".{name}.{page_no:08}{PAGE_SUFFIX}.tmp"))
}

/// Path of the writer lock file of journal `name` in `dir`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{LOCK_SUFFIX}"))
}

/// Splits a page file name into journal name and page number.
///
/// Only the canonical name is a page (FORMAT.md, "Files"):
/// `<name>.<digits>.journal` where `<name>` is a valid journal name and
/// `<digits>` is the page number, at least 1, in decimal zero-padded to 8
/// digits (`00000001` to `99999999`; from 100000000 on, its digits with no
/// leading zero, up to `u64::MAX`). `md.17.journal`, `md.00000000.journal`
/// or `md.000000017.journal` are not pages (see [`foreign_page_name`]).
pub fn parse_page_file_name(file_name: &str) -> Option<(&str, u64)> {
    let (name, digits) = split_page_file_name(file_name)?;
    let no: u64 = digits.parse().ok()?;
    if no == 0 || digits != format!("{no:08}") {
        return None;
    }
    Some((name, no))
}

/// `(name, digits)` of a file named `<name>.<digits>.journal` with a valid
/// journal name and only ASCII digits between the dots, canonical or not.
fn split_page_file_name(file_name: &str) -> Option<(&str, &str)> {
    let stem = file_name.strip_suffix(PAGE_SUFFIX)?;
    let (name, no) = stem.rsplit_once('.')?;
    if no.is_empty() || !no.bytes().all(|b| b.is_ascii_digit()) || check_name(name).is_err() {
        return None;
    }
    Some((name, no))
}

/// Whether `file_name` looks like a page file of journal `name` but is not
/// one: `<name>.<digits>.journal` whose digits are not the canonical
/// 8-digit zero-padded page number of a page from 1 on (`md.17.journal`,
/// `md.00000000.journal`). Such a file is never read as a page; `verify`
/// names it.
pub fn foreign_page_name(file_name: &str, name: &str) -> bool {
    split_page_file_name(file_name).is_some_and(|(n, _)| n == name)
        && parse_page_file_name(file_name).is_none()
}

/// Files in `dir` that look like page files of journal `name` but are not
/// (see [`foreign_page_name`]), sorted.
pub fn foreign_page_files(dir: &Path, name: &str) -> io::Result<Vec<String>> {
    let mut v = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e),
    };
    for entry in entries {
        if let Some(f) = entry?.file_name().to_str() {
            if foreign_page_name(f, name) {
                v.push(f.to_string());
            }
        }
    }
    v.sort_unstable();
    Ok(v)
}

/// Page numbers of journal `name` in `dir`, ascending. Empty when the
/// journal has no page (or the folder does not exist).
pub fn list_pages(dir: &Path, name: &str) -> io::Result<Vec<u64>> {
    let mut pages = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(pages),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if let Some((n, no)) = entry.file_name().to_str().and_then(parse_page_file_name) {
            if n == name {
                pages.push(no);
            }
        }
    }
    pages.sort_unstable();
    Ok(pages)
}

/// Names of the journals that have at least one page in `dir`, sorted.
pub fn list_journals(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((n, _)) = entry.file_name().to_str().and_then(parse_page_file_name) {
            names.push(n.to_string());
        }
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// The exclusive writer lock of one journal: an `flock` on `<name>.lock`
/// that the kernel drops when the holding process exits or is killed, so
/// the one-writer rule holds even while no service runs.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
    path: PathBuf,
}

/// Why the writer lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; `pid` is the holder the kernel
    /// lists for it (`/proc/locks`), 0 when it cannot be told. (The pid in
    /// the lock file is the last tape writer that took it, which may have
    /// exited: another program can hold the lock.)
    Held {
        /// The lock file.
        path: PathBuf,
        /// Pid of the holder, 0 if unknown.
        pid: u32,
    },
    /// The lock file could not be opened or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { path, pid: 0 } => write!(
                f,
                "another process holds {} and the system does not say which (try `fuser -v` on it): stop it or wait for it to exit",
                path.display()
            ),
            LockError::Held { path, pid } => {
                write!(f, "another process (pid {pid}")?;
                if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
                    write!(f, ", {}", comm.trim())?;
                }
                write!(
                    f,
                    ") holds {}: stop it or wait for it to exit",
                    path.display()
                )
            }
            LockError::Io { path, source } => {
                write!(f, "cannot lock {}: {source}", path.display())?;
                if matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS)
                ) {
                    f.write_str(" (this user may not write this journal: run the writer as the journal's owner)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LockError {}

impl JournalLock {
    /// Takes the writer lock of journal `name` in `dir` without waiting.
    pub fn acquire(dir: &Path, name: &str) -> Result<JournalLock, LockError> {
        let path = lock_path(dir, name);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(io_err)?;
        lock_exclusive(&file, &path, || recorded_pid(&file))?;
        let pid = std::process::id();
        file.set_len(0).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        writeln!(file, "{pid}").map_err(io_err)?;
        Ok(JournalLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Pid of the process that holds the writer lock of journal `name`, when
/// a process holds it: `Some(0)` when it is held but the holder cannot be
/// told (see [`LockError::Held`]); `None` when nobody holds it.
pub fn lock_holder(dir: &Path, name: &str) -> Option<u32> {
    let path = lock_path(dir, name);
    let file = File::open(&path).ok()?;
    // SAFETY: flock on a descriptor we own. Shared and non-blocking: it
    // succeeds only when no writer holds the exclusive lock.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        // SAFETY: as above; releases the shared lock we just took.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return None;
    }
    Some(exclusive_holder(&file, || recorded_pid(&file)).unwrap_or(0))
}

/// Takes an exclusive, non-blocking `flock` on `file` (opened at `path`),
/// held until the file is closed, by the process and its forks. When
/// another open file description holds it: [`LockError::Held`] naming
/// the holder (see [`exclusive_holder`]; `recorded` gives the pid the file
/// itself records, used only as that function says). Shared by the writer
/// lock and the reader positions (`position.rs`).
pub(crate) fn lock_exclusive(
    file: &File,
    path: &Path,
    recorded: impl FnOnce() -> Option<u32>,
) -> Result<(), LockError> {
    // SAFETY: flock on a file descriptor the caller owns; it has no memory
    // effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        let pid = exclusive_holder(file, recorded).unwrap_or(0);
        return Err(LockError::Held {
            path: path.to_path_buf(),
            pid,
        });
    }
    Err(LockError::Io {
        path: path.to_path_buf(),
        source: err,
    })
}

/// The pid a writer lock file records (its text), if any.
fn recorded_pid(mut file: &File) -> Option<u32> {
    let mut s = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    let _ = file.read_to_string(&mut s);
    s.trim().parse().ok()
}

/// The holder of the exclusive `flock` on the open file `file`, which
/// another process holds: the pid the kernel lists for it in `/proc/locks`
/// (the process that took the lock). The pid recorded in the file
/// (`recorded`) is the last process that took the lock, which may have
/// exited since (another program can hold the lock without writing its
/// pid): it is only used when `/proc/locks` cannot be read, and only if
/// that process is alive. `None` when the holder cannot be told (or, when
/// `/proc/locks` can be read, nobody holds it).
pub(crate) fn exclusive_holder(file: &File, recorded: impl FnOnce() -> Option<u32>) -> Option<u32> {
    match flock_holders(file, true) {
        Some(pids) => pids.first().copied(),
        None => recorded().filter(|&p| p != 0 && alive(p)),
    }
}

/// Whether process `pid` exists (one of another user's too).
pub(crate) fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the
    // process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Pids holding an `flock` on the open file `file` (only exclusive ones
/// with `exclusive`), as the kernel lists them in `/proc/locks`, sorted;
/// `None` when that cannot be read.
pub(crate) fn flock_holders(file: &File, exclusive: bool) -> Option<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse_flock_holders(
        &locks,
        meta.dev(),
        meta.ino(),
        exclusive,
    ))
}

/// In the text of `/proc/locks`, the pids holding an `flock` on the inode
/// `ino` of device `dev`. Lines look like
/// `5: FLOCK  ADVISORY  WRITE 21641 fe:00:10011297 0 EOF` (device major and
/// minor in hex, inode in decimal); a line with `->` is a waiter, not a
/// holder.
fn parse_flock_holders(locks: &str, dev: u64, ino: u64, exclusive: bool) -> Vec<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    let mut pids: Vec<u32> = locks
        .lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [_, "FLOCK", _, kind, pid, file, ..]
                    if *file == want && (!exclusive || *kind == "WRITE") =>
                {
                    pid.parse().ok().filter(|&p: &u32| p != 0)
                }
                _ => None,
            }
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("md").is_ok());
        assert!(check_name("md.binance-BTC_USDT").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert_eq!(
            parse_page_file_name("md.binance.00000003.journal"),
            Some(("md.binance", 3))
        );
        assert_eq!(parse_page_file_name("md.x.journal"), None);
        assert_eq!(parse_page_file_name(".md.00000001.journal.tmp"), None);
        // Only the canonical name is a page.
        assert_eq!(parse_page_file_name("md.17.journal"), None);
        assert_eq!(parse_page_file_name("md.00000000.journal"), None);
        assert_eq!(parse_page_file_name("md.000000017.journal"), None);
        assert_eq!(
            parse_page_file_name("md.123456789.journal"),
            Some(("md", 123456789))
        );
        assert_eq!(parse_page_file_name("md.0123456789.journal"), None);
        assert_eq!(
            parse_page_file_name("md.99999999999999999999.journal"),
            None
        );
        assert!(foreign_page_name("md.17.journal", "md"));
        assert!(foreign_page_name("md.00000000.journal", "md"));
        assert!(!foreign_page_name("md.00000017.journal", "md"));
        assert!(!foreign_page_name("md.x.17.journal", "md"));
    }

    #[test]
    fn proc_locks_names_the_flock_holder() {
        let locks = "1: POSIX  ADVISORY  WRITE 7 fe:00:42 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 99 fe:00:42 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 100 fe:00:42 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 5 fe:00:43 0 EOF\n";
        let dev = libc::makedev(0xfe, 0) as u64;
        assert_eq!(parse_flock_holders(locks, dev, 42, true), vec![99]);
        assert_eq!(parse_flock_holders(locks, dev, 44, true), Vec::<u32>::new());
        assert_eq!(parse_flock_holders(locks, dev, 43, false), vec![5]);
    }

    #[test]
    fn lock_is_exclusive_and_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = JournalLock::acquire(dir.path(), "md").unwrap();
        // flock is per open file description: a second open in the same
        // process conflicts too.
        match JournalLock::acquire(dir.path(), "md") {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(lock_holder(dir.path(), "md"), Some(std::process::id()));
        drop(lock);
        assert_eq!(lock_holder(dir.path(), "md"), None);
        JournalLock::acquire(dir.path(), "md").unwrap();
    }
}
