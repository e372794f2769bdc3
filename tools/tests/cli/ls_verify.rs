//! `tape ls` (journals, last sequence, writer pid while it runs, readers)
//! and `tape verify` (good journal, damaged frame).

use crate::common::*;
use std::os::unix::fs::FileExt;

#[test]
fn ls_shows_journals_last_seq_writer_and_readers() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "done", &lines(1..=3));
    let mut w = LiveWriter::start(&root, "md");
    w.send(&lines(1..=5));
    wait_until("md's 5 frames", || {
        ls_entry(&root, "md").is_some_and(|e| e["last_seq"] == 5)
    });
    let mut tail = spawn_tail(&root, &["md", "--follow"]);
    wait_reader_registered(&root, "md", tail.pid());

    let md = ls_entry(&root, "md").unwrap();
    assert_eq!(md["last_seq"], 5, "{md}");
    assert_eq!(md["frames"], 5, "{md}");
    assert_eq!(md["writer_pid"].as_u64(), Some(w.pid() as u64), "{md}");
    let readers = md["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 1, "{md}");
    assert!(
        readers[0]
            .as_str()
            .unwrap()
            .contains(&tail.pid().to_string()),
        "{md}"
    );
    let done = ls_entry(&root, "done").unwrap();
    assert_eq!(done["last_seq"], 3, "{done}");
    assert!(done["writer_pid"].is_null(), "{done}");

    let table = String::from_utf8(ok(&mut root.tape("ls", &[]), b"")).unwrap();
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (seq_col, writer_col) = (col("LAST_SEQ"), col("WRITER"));
    // DISK is "N.N MiB": two words, after LAST_SEQ and before WRITER.
    let md_row = row("md");
    assert_eq!(md_row[seq_col], "5", "{table}");
    assert_eq!(md_row[writer_col + 1], w.pid().to_string(), "{table}");
    let done_row = row("done");
    assert_eq!(done_row[seq_col], "3", "{table}");
    assert_eq!(done_row[writer_col + 1], "none", "{table}");

    w.finish();
    tail.kill9();
    wait_until("the service to see the writer go", || {
        service_writer(&root, "md").is_none()
    });
    let md = ls_entry(&root, "md").unwrap();
    assert!(md["writer_pid"].is_null(), "no writer after it exits: {md}");
    assert_eq!(md["last_seq"], 5);
    let table = String::from_utf8(ok(&mut root.tape("ls", &[]), b"")).unwrap();
    let md_row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("md "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(md_row[writer_col + 1], "none", "{table}");
}

/// Offset of frame `seq` (1-based) in a page, walking the length words as
/// journal/FORMAT.md describes: frames start at 64, each `(len + 7) & !7`
/// long.
fn frame_offset(page: &[u8], seq: u64) -> usize {
    let mut off = 64;
    for _ in 1..seq {
        let len = u32::from_le_bytes(page[off..off + 4].try_into().unwrap()) as usize;
        assert!(len >= 48 && len != u32::MAX as usize, "frame at {off}");
        off += (len + 7) & !7;
    }
    let s = u64::from_le_bytes(page[off + 8..off + 16].try_into().unwrap());
    assert_eq!(s, seq, "seq field at offset 8 of the frame at {off}");
    off
}

#[test]
fn verify_passes_a_good_journal_and_names_a_damaged_frame() {
    let root = Root::new();
    let _service = Service::start(&root);
    write_journal(&root, "md", &lines(1..=1000));
    let out = ok(&mut root.tape("verify", &["md"]), b"");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("ok") && out.contains("1000"), "{out}");

    let path = root.page("md", 1);
    let page = std::fs::read(&path).unwrap();
    let off = frame_offset(&page, 500);
    assert_eq!(&page[off + 48..off + 51], b"500", "payload at offset 48");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[page[off + 49] ^ 0x40], (off + 49) as u64)
        .unwrap();
    drop(file);

    let o = run(&mut root.tape("verify", &["md"]), b"");
    assert!(!o.status.success(), "verify must fail on a damaged frame");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("md.00000001.journal"), "names the file: {err}");
    assert!(
        err.contains(&off.to_string()) || err.contains(&format!("{off:#x}")),
        "names the offset {off}: {err}"
    );
}
