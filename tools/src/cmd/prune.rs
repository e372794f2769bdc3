//! `tape prune JOURNAL`: delete a journal's oldest pages by rule.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use tape_journal::{PruneReport, PruneRule};

use super::ls::human;

/// Prunes journal `name` in `dir` by `rule` (or only says what it would
/// delete, with `dry_run`), printing one line to `out`.
pub fn run(
    dir: &Path,
    name: &str,
    rule: &PruneRule,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<PruneReport> {
    let r = tape_journal::prune(dir, name, rule, dry_run)
        .with_context(|| format!("cannot prune journal {name}"))?;
    writeln!(out, "{}", describe(name, &r, dry_run))?;
    Ok(r)
}

/// One line saying what a prune did: `md: deleted pages 1..=4 (4.0 MiB);
/// 2 pages left (2.0 MiB)`, and which page it had to keep, and why.
pub fn describe(name: &str, r: &PruneReport, dry_run: bool) -> String {
    let mut line = format!("{name}: ");
    match (r.deleted.first(), r.deleted.last()) {
        (Some(a), Some(b)) => {
            let verb = if dry_run { "would delete" } else { "deleted" };
            let pages = if a == b {
                format!("page {a}")
            } else {
                format!("pages {a}..={b}")
            };
            line += &format!("{verb} {pages} ({})", human(r.freed_bytes));
        }
        _ => line += "nothing to delete",
    }
    line += &format!(
        "; {} page{} left ({})",
        r.pages_left,
        if r.pages_left == 1 { "" } else { "s" },
        human(r.bytes_left)
    );
    if let Some(u) = &r.in_use {
        let who = if u.pids.is_empty() {
            "a reader or the writer".to_string()
        } else {
            let pids: Vec<String> = u.pids.iter().map(u32::to_string).collect();
            format!("pid {}", pids.join(", "))
        };
        line += &format!(
            "; kept page {} and later: {who} still has it mapped",
            u.page_no
        );
    }
    line
}
