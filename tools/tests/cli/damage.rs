//! A damaged journal through the command line: a page file truncated,
//! extended, zeroed in the middle, or with a frame length past the page.
//! `tape tail` prints the good frames and stops with an error naming the
//! file (and the offset, for a frame); `tape verify` names the same place;
//! `tape write` refuses to append after damage it cannot repair (in its
//! last page, or the page before it, whose end marker it relies on) and
//! leaves the files as they were.

use crate::common::*;
use std::path::Path;

/// Frames of about 56 bytes: 50,000 of them fill two pages of 1 MiB and
/// part of a third.
const N: u64 = 50_000;

/// Offsets of the frames in a page, walking the length words as
/// journal/FORMAT.md describes (frames at 64, each `(len + 7) & !7` long),
/// up to the end-of-page marker or the first zero.
pub(crate) fn frame_offsets(page: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut off = 64;
    loop {
        let len = u32::from_le_bytes(page[off..off + 4].try_into().unwrap());
        if len == 0 || len == u32::MAX {
            return v;
        }
        v.push(off);
        off += (len as usize + 7) & !7;
    }
}

/// Sequence number of the frame at `off` (offset 8 of its header).
pub(crate) fn seq_at(page: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(page[off + 8..off + 16].try_into().unwrap())
}

/// Every page file of the journal folder and its bytes.
pub(crate) fn files(root: &Root) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(root.journal_dir())
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().ends_with(".journal")
        })
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

pub(crate) fn copy_journal(from: &Root, to: &Root) {
    std::fs::create_dir_all(to.journal_dir()).unwrap();
    for e in std::fs::read_dir(from.journal_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.journal_dir().join(e.file_name())).unwrap();
    }
}

/// What `tape tail md` printed before its error, as numbers, and the error.
fn tail_until_error(root: &Root) -> (Vec<u64>, String) {
    let o = run(&mut root.tape("tail", &["md"]), b"");
    assert!(!o.status.success(), "tape tail must fail on damage");
    let got = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().expect("a number"))
        .collect();
    (got, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[track_caller]
fn names(err: &str, path: &Path, offset: Option<usize>) {
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(file), "does not name {file}: {err}");
    if let Some(off) = offset {
        assert!(
            err.contains(&format!("offset {off}")),
            "does not name offset {off}: {err}"
        );
    }
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// Each damage, in a copy of one good journal.
#[test]
fn tail_verify_and_write_stop_at_damage() {
    let good = Root::new();
    {
        let _service = Service::start(&good);
        write_journal(&good, "md", &lines(1..=N));
    }
    // Page 3 has the last frame (a page 4 made ahead has none).
    assert!(good.page("md", 3).exists() && !good.page("md", 5).exists());
    if let Ok(p4) = std::fs::read(good.page("md", 4)) {
        assert_eq!(&p4[64..68], &[0; 4]);
    }
    let p1 = std::fs::read(good.page("md", 1)).unwrap();
    let p3 = std::fs::read(good.page("md", 3)).unwrap();
    let in_p1 = frame_offsets(&p1).len() as u64;
    let offs3 = frame_offsets(&p3);
    let first3 = seq_at(&p3, offs3[0]);
    let page_len = p1.len() as u64;

    // (what, page, how, reader stops after frame, offset named)
    type Damage = Box<dyn Fn(&Path)>;
    let set_len = |len: u64| -> Damage {
        Box::new(move |p: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len)
                .unwrap()
        })
    };
    let at = |off: usize, bytes: Vec<u8>| -> Damage {
        Box::new(move |p: &Path| {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(&bytes, off as u64).unwrap();
        })
    };
    let hole = offs3[100];
    let bad_len = offs3[200];
    let cases: Vec<(&str, u64, Damage, u64, Option<usize>)> = vec![
        (
            "last page truncated",
            3,
            set_len(page_len / 2),
            first3 - 1,
            None,
        ),
        (
            "last page extended",
            3,
            set_len(page_len + 4096),
            first3 - 1,
            None,
        ),
        (
            "zeros in the middle of the last page",
            3,
            at(hole, vec![0; 3 * 56]),
            first3 + 99,
            Some(hole),
        ),
        (
            "a frame length past the page",
            3,
            at(bad_len, (page_len as u32 - 16).to_le_bytes().to_vec()),
            first3 + 199,
            Some(bad_len),
        ),
        (
            "middle page truncated",
            2,
            set_len(page_len - 8),
            in_p1,
            None,
        ),
    ];
    for (what, no, damage, stops_after, offset) in cases {
        let root = Root::new();
        copy_journal(&good, &root);
        let page = root.page("md", no);
        damage(&page);
        let before = files(&root);

        let (got, err) = tail_until_error(&root);
        assert_eq!(got, (1..=stops_after).collect::<Vec<_>>(), "{what}: tail");
        names(&err, &page, offset);

        let o = run(&mut root.tape("verify", &["md"]), b"");
        assert!(!o.status.success(), "{what}: verify passed");
        names(&String::from_utf8_lossy(&o.stderr), &page, offset);

        let service = Service::start(&root);
        let o = run(&mut root.tape("write", &["md"]), b"more\n");
        assert!(!o.status.success(), "{what}: the writer appended");
        names(&String::from_utf8_lossy(&o.stderr), &page, offset);
        assert!(
            files(&root) == before,
            "{what}: a refused writer changed files"
        );
        drop(service);
    }
}
