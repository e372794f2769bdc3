//! Retention the service applies on its own: a [`Retainer`] thread prunes
//! the journals of a folder by [`Retention`] rules every so often.
//!
//! Pruning is [`tape_journal::prune`]: whole old pages, never the page with
//! the last frame, never a page a reader or the writer has mapped (the
//! kernel-held page locks decide, so the retainer needs no bookkeeping of
//! who reads what and is safe to run beside `tape prune` and other
//! retainers). `tape service --retain md:keep-last=20` starts one.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};
use tape_journal::{PruneReport, PruneRule};

/// One retention rule: a journal (or `*` for every journal of the folder)
/// and what to delete of it.
///
/// Written `NAME:RULE[,RULE...]` with rules `keep-last=N`,
/// `older-than=DURATION` (`90s`, `15m`, `12h`, `7d`) and `max-size=BYTES`
/// (`512M`, `10G`): `md:keep-last=20`, `*:older-than=7d,max-size=50G`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Journal name, or `*` for every journal in the folder.
    pub journal: String,
    /// What to delete.
    pub rule: PruneRule,
}

impl FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "use NAME:RULE[,RULE...] with keep-last=N, older-than=DURATION or max-size=BYTES, e.g. md:keep-last=20";
        let (journal, rules) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not a retention rule: {usage}"))?;
        if journal != "*" {
            tape_journal::check_name(journal).map_err(|e| e.to_string())?;
        }
        let mut rule = PruneRule::default();
        for part in rules.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} in {s:?} is not KEY=VALUE: {usage}"))?;
            match key {
                "keep-last" => {
                    let n: u64 = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("keep-last={value} must be a whole number of pages, 1 or more")
                    })?;
                    rule.keep_last = Some(n);
                }
                "older-than" => rule.older_than = Some(parse_duration(value)?),
                "max-size" => rule.max_size = Some(parse_size(value)?),
                _ => return Err(format!("{key:?} in {s:?} is not a rule: {usage}")),
            }
        }
        if rule.is_empty() {
            return Err(format!("{s:?} has no rule: {usage}"));
        }
        Ok(Retention {
            journal: journal.to_string(),
            rule,
        })
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.journal)?;
        let mut parts = Vec::new();
        if let Some(n) = self.rule.keep_last {
            parts.push(format!("keep-last={n}"));
        }
        if let Some(d) = self.rule.older_than {
            parts.push(format!("older-than={}s", d.as_secs()));
        }
        if let Some(b) = self.rule.max_size {
            parts.push(format!("max-size={b}"));
        }
        f.write_str(&parts.join(","))
    }
}

/// A thread that applies [`Retention`] rules to the journals of one folder
/// every `every`, logging one line to standard error per prune that
/// deleted something, and once each time a journal's other state changes
/// (a page in use keeps the rule from deleting; a failure). Dropping it stops
/// the thread at once.
#[derive(Debug)]
pub struct Retainer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Retainer {
    /// Starts applying `rules` to the journals in `dir`, the first time at
    /// once, then every `every`.
    pub fn start(dir: PathBuf, rules: Vec<Retention>, every: Duration) -> io::Result<Retainer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tape-retain".into())
            .spawn(move || {
                // The last thing said of each journal that was not a
                // deletion, so that a state that lasts is said once.
                let mut said: std::collections::HashMap<String, String> = Default::default();
                loop {
                    for (name, result) in apply(&dir, &rules) {
                        let text = match result {
                            Ok(r) if !r.deleted.is_empty() => {
                                eprintln!("tape service: retention: {}", describe(&name, &r));
                                said.remove(&name);
                                continue;
                            }
                            Ok(r) => match r.in_use {
                                Some(u) if r.wanted > 0 => format!(
                                    "tape service: retention: {name}: nothing deleted, page {} is in use ({})",
                                    u.page_no,
                                    holders(&u.pids)
                                ),
                                _ => String::new(),
                            },
                            Err(e) => format!("tape service: retention of {name}: {e}"),
                        };
                        if said.get(&name) != Some(&text) {
                            if !text.is_empty() {
                                eprintln!("{text}");
                            }
                            said.insert(name, text);
                        }
                    }
                    let (lock, cv) = &*flag;
                    let stopped = tape_journal::sync::lock(lock);
                    let (stopped, _) =
                        tape_journal::sync::wait_timeout_while(cv, stopped, every, |s| !*s);
                    if *stopped {
                        return;
                    }
                }
            })?;
        Ok(Retainer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Retainer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *tape_journal::sync::lock(lock) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Applies every rule once: the journals each names (those that exist) and
/// what pruning them did. A journal named by several rules gets each.
pub fn apply(
    dir: &Path,
    rules: &[Retention],
) -> Vec<(String, Result<PruneReport, tape_journal::PruneError>)> {
    let mut out = Vec::new();
    for r in rules {
        let names = if r.journal == "*" {
            tape_journal::list_journals(dir).unwrap_or_default()
        } else {
            vec![r.journal.clone()]
        };
        for name in names {
            match tape_journal::prune(dir, &name, &r.rule, false) {
                // Not created yet: nothing to keep in check.
                Err(tape_journal::PruneError::Open(tape_journal::OpenError::NotFound {
                    ..
                })) => {}
                result => out.push((name, result)),
            }
        }
    }
    out
}

fn holders(pids: &[u32]) -> String {
    if pids.is_empty() {
        return "by a reader or the writer".into();
    }
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    format!("by pid {}", pids.join(", "))
}

fn describe(name: &str, r: &PruneReport) -> String {
    let (a, b) = (r.deleted[0], r.deleted[r.deleted.len() - 1]);
    let mut s = format!(
        "{name}: deleted pages {a}..={b} ({} bytes), {} pages left ({} bytes)",
        r.freed_bytes, r.pages_left, r.bytes_left
    );
    if let Some(u) = &r.in_use {
        s += &format!("; page {} is in use ({})", u.page_no, holders(&u.pids));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        let r: Retention = "md:keep-last=20".parse().unwrap();
        assert_eq!(r.journal, "md");
        assert_eq!(r.rule.keep_last, Some(20));
        let r: Retention = "*:older-than=7d,max-size=10G".parse().unwrap();
        assert_eq!(r.journal, "*");
        assert_eq!(r.rule.older_than, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(r.rule.max_size, Some(10 << 30));
        assert_eq!(r.to_string(), "*:older-than=604800s,max-size=10737418240");
        for bad in [
            "md",
            "md:",
            "md:keep-last=0",
            "md:keep-last=x",
            "md:forever",
            "md:color=red",
            "../x:keep-last=1",
            "md:older-than=soon",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
    }
}
