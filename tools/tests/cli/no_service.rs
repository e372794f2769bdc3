//! `tape write` with no service: a clear refusal, nothing on disk.

use crate::common::*;

fn entries(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

#[test]
fn write_without_a_service_fails_and_creates_nothing() {
    let root = Root::new();
    let o = run(&mut root.tape("write", &["md"]), b"1\n2\n");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tape service"),
        "says to start tape service: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");
    assert!(
        entries(&root.journal_dir()).is_empty(),
        "no journal file: {:?}",
        entries(&root.journal_dir())
    );

    // Same with a journal folder that already holds another journal.
    std::fs::create_dir_all(root.journal_dir()).unwrap();
    std::fs::write(root.journal_dir().join("other.lock"), b"1\n").unwrap();
    let o = run(&mut root.tape("write", &["md"]), b"1\n");
    assert!(!o.status.success());
    assert_eq!(entries(&root.journal_dir()), ["other.lock"]);
}
