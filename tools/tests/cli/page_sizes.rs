//! Pages that grow (journal/FORMAT.md, "Page sizes"), through the real
//! `tape` binary: a small journal takes little disk, and `tape verify`
//! names the format version of the files, version 1 included.

use crate::common::*;
use std::os::unix::fs::MetadataExt;

/// Bytes the page files of `journal` take on disk (allocated blocks, as
/// `du` counts them), and their sizes.
fn allocated(root: &Root, journal: &str) -> (u64, Vec<u64>) {
    let pages = tape_journal::list_pages(&root.journal_dir(), journal).unwrap();
    let mut total = 0;
    let mut sizes = Vec::new();
    for no in pages {
        let path = tape_journal::files::page_path(&root.journal_dir(), journal, no);
        let m = std::fs::metadata(&path).unwrap();
        total += m.blocks() * 512;
        sizes.push(m.len());
    }
    (total, sizes)
}

#[test]
fn a_thousand_frames_take_at_most_4_mib_with_the_default_page_size() {
    let root = Root::new();
    let _service = Service::start(&root);
    // No --page-size: the default largest page, 128 MiB.
    ok(&mut root.tape("write", &["md"]), &lines(1..=1000));
    let md = ls_entry(&root, "md").expect("md in tape ls");
    let disk = md["disk_bytes"].as_u64().unwrap();
    assert!(disk <= 4 << 20, "tape ls says {disk} bytes on disk: {md}");
    assert_eq!(md["frames"], 1000, "{md}");
    assert_eq!(md["max_page_size"], 128u64 << 20, "{md}");
    assert_eq!(md["format_version"], 2, "{md}");
    // What the files really hold, the page made ahead included, is what
    // tape ls says: 1 MiB + 2 MiB, each fully allocated.
    let (total, sizes) = allocated(&root, "md");
    assert_eq!(total, disk, "tape ls and the files' blocks disagree");
    assert_eq!(sizes, [1 << 20, 2 << 20], "page sizes");
    assert_eq!(total, 3 << 20, "every page is allocated in full");
    let out = String::from_utf8(ok(&mut root.tape("verify", &["md"]), b"")).unwrap();
    assert!(
        out.contains("format version 2 (pages grow from 1.0 MiB to 128.0 MiB)"),
        "{out}"
    );
    let tail = ok(&mut root.tape("tail", &["md"]), b"");
    assert_eq!(tail, lines(1..=1000));
}

/// Turns every page of `journal` into a version-1 page: version 1, bytes
/// 48 to 63 zero (a journal written before pages grew; all its pages have
/// one size).
fn make_version_1(root: &Root, journal: &str) {
    use std::os::unix::fs::FileExt;
    for no in tape_journal::list_pages(&root.journal_dir(), journal).unwrap() {
        let path = tape_journal::files::page_path(&root.journal_dir(), journal, no);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&1u32.to_le_bytes(), 8).unwrap();
        f.write_all_at(&[0u8; 16], 48).unwrap();
    }
}

#[test]
fn a_version_1_journal_is_read_verified_and_continued_as_version_1() {
    let root = Root::new();
    let _service = Service::start(&root);
    // --page-size 1 MiB: every page 1 MiB, as a version-1 journal's are.
    let big: Vec<u8> = (1..=30000u64)
        .flat_map(|i| format!("{i:0>20}\n").into_bytes())
        .collect();
    write_journal(&root, "old", &big);
    make_version_1(&root, "old");
    let out = String::from_utf8(ok(&mut root.tape("verify", &["old"]), b"")).unwrap();
    assert!(
        out.contains("format version 1 (every page 1.0 MiB"),
        "{out}"
    );
    assert_eq!(ok(&mut root.tape("tail", &["old"]), b""), big);
    // Appending goes on in version 1, with pages of its one size.
    let more: Vec<u8> = (30001..=60000u64)
        .flat_map(|i| format!("{i:0>20}\n").into_bytes())
        .collect();
    write_journal(&root, "old", &more);
    let (_, sizes) = allocated(&root, "old");
    assert!(
        sizes.len() >= 3 && sizes.iter().all(|&s| s == 1 << 20),
        "{sizes:?}"
    );
    let out = String::from_utf8(ok(&mut root.tape("verify", &["old"]), b"")).unwrap();
    assert!(out.contains("format version 1"), "{out}");
    let mut all = big.clone();
    all.extend_from_slice(&more);
    assert_eq!(ok(&mut root.tape("tail", &["old"]), b""), all);
}

#[test]
fn a_file_of_an_unknown_version_is_refused_by_name_and_version() {
    use std::os::unix::fs::FileExt;
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "new", &lines(1..=10));
    let path = tape_journal::files::page_path(&root.journal_dir(), "new", 1);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&3u32.to_le_bytes(), 8).unwrap();
    for args in [&["verify", "new"][..], &["tail", "new"][..]] {
        let o = run(&mut root.tape(args[0], &args[1..]), b"");
        assert!(!o.status.success(), "{args:?} accepted a version 3 page");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&path.display().to_string()) && err.contains("format version 3"),
            "{args:?}: {err}"
        );
        assert!(err.contains("versions 1 and 2"), "{args:?}: {err}");
    }
}
