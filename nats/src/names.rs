//! The one-to-one rule from journal names to JetStream stream and subject
//! names.
//!
//! A journal name is 1 to 64 of `A-Z a-z 0-9 _ - .` (not starting with
//! `.`). A stream name may not contain `.` (nor `*`, `>`, white space), and
//! a `.` in a subject splits it into tokens. So the name is escaped: `_`
//! becomes `__` and `.` becomes `_d`; every other character stays. Each
//! `_` of an escaped name starts a two-character escape, so no two journal
//! names give the same escaped name and [`journal_of`] gives the name back.
//!
//! | journal | stream | subject |
//! |---|---|---|
//! | `md` | `TAPE_md` | `tape.journal.md` |
//! | `md.sh` | `TAPE_md_dsh` | `tape.journal.md_dsh` |
//! | `rpc_echo` | `TAPE_rpc__echo` | `tape.journal.rpc__echo` |

/// Prefix of every stream that `tape nats export` makes.
pub const STREAM_PREFIX: &str = "TAPE_";
/// Prefix of every subject that `tape nats export` publishes on.
pub const SUBJECT_PREFIX: &str = "tape.journal.";

/// The escaped form of a journal name (see the module docs).
pub fn escape(journal: &str) -> String {
    let mut s = String::with_capacity(journal.len() + 4);
    for c in journal.chars() {
        match c {
            '_' => s.push_str("__"),
            '.' => s.push_str("_d"),
            c => s.push(c),
        }
    }
    s
}

/// The journal name an escaped name stands for, `None` when it is not
/// the escape of a valid journal name.
pub fn unescape(escaped: &str) -> Option<String> {
    let mut s = String::with_capacity(escaped.len());
    let mut it = escaped.chars();
    while let Some(c) = it.next() {
        match c {
            '_' => match it.next()? {
                '_' => s.push('_'),
                'd' => s.push('.'),
                _ => return None,
            },
            c => s.push(c),
        }
    }
    tape_journal::check_name(&s).ok()?;
    Some(s)
}

/// The stream of a journal: `TAPE_` + the escaped name.
pub fn stream_of(journal: &str) -> String {
    format!("{STREAM_PREFIX}{}", escape(journal))
}

/// The subject a journal's frames are published on:
/// `tape.journal.` + the escaped name.
pub fn subject_of(journal: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", escape(journal))
}

/// The journal a stream made by `tape nats export` stands for.
pub fn journal_of(stream: &str) -> Option<String> {
    unescape(stream.strip_prefix(STREAM_PREFIX)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_never_collides() {
        let names = [
            "md", "md.sh", "md_sh", "md__sh", "md_dsh", "a._b", "a_.b", "a..b", "a_d", "x-y.z_",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let s = stream_of(n);
            assert!(!s.contains('.'), "{s}");
            assert!(seen.insert(s.clone()), "{n} collides as {s}");
            assert_eq!(journal_of(&s).as_deref(), Some(n));
            assert!(!subject_of(n)[SUBJECT_PREFIX.len()..].contains('.'));
        }
        assert_eq!(stream_of("md.sh"), "TAPE_md_dsh");
        assert_eq!(journal_of("TAPE_md_x"), None);
        assert_eq!(journal_of("TAPE_md_"), None);
        assert_eq!(journal_of("OTHER"), None);
    }
}
