//! Helpers shared by the integration tests: deterministic payloads, child
//! processes by re-execution (on tape-testkit), a page model.

#![allow(dead_code)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tape_journal::format::{checksum, FrameHeader, Geometry, PageHeader, FRAME_HEADER_LEN};
use tape_journal::{AppendOptions, PrepareOptions};

/// Page size the tests use: the smallest allowed, 1 MiB.
pub const PAGE: u64 = 1 << 20;

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE_ENV: &str = "TAPE_IT_ROLE";
/// Environment variable naming the journal folder of a child.
pub const DIR_ENV: &str = "TAPE_IT_DIR";

/// SplitMix64: a deterministic, well-mixed function of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Payload length of frame `seq`: 0..=max, deterministic.
pub fn payload_len(seq: u64, max: usize) -> usize {
    (mix(seq) % (max as u64 + 1)) as usize
}

/// Fills `buf` with the payload of frame `seq` (any length).
pub fn fill_payload(seq: u64, buf: &mut [u8]) {
    let h = mix(seq ^ 0x005E_ED0F_7A9E).to_le_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = h[i & 7] ^ (i as u8);
    }
}

/// The payload of frame `seq` with the length [`payload_len`] gives.
pub fn payload(seq: u64, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; payload_len(seq, max)];
    fill_payload(seq, &mut v);
    v
}

/// Appender options for tests that need no background thread.
pub fn foreground() -> AppendOptions {
    AppendOptions {
        page_size: PAGE,
        background: false,
        prepare: PrepareOptions::default(),
        ..AppendOptions::default()
    }
}

/// Appender options as a production writer uses them, with 1 MiB pages.
pub fn background() -> AppendOptions {
    AppendOptions {
        page_size: PAGE,
        ..AppendOptions::default()
    }
}

pub use tape_testkit::{Deadline, Kid};

/// The role this process plays when it is a re-executed child, and the
/// journal folder it was given.
pub fn role() -> Option<(String, PathBuf)> {
    let role = tape_testkit::role(ROLE_ENV)?;
    let dir = std::env::var_os(DIR_ENV)?;
    Some((role, PathBuf::from(dir)))
}

/// Re-executes this test binary to run only `test` (its full path in the
/// binary, e.g. `processes::lock_names_holder`) with `role` and `dir` in the
/// environment; killed and reaped when dropped.
pub fn spawn_role(test: &str, role: &str, dir: &Path) -> Kid {
    let mut cmd = tape_testkit::role_command(test, ROLE_ENV, role, &[(DIR_ENV, dir.as_os_str())]);
    Kid::spawn(role, &mut cmd)
}

/// Path of page `no` of journal `name`.
pub fn page_file(dir: &Path, name: &str, no: u64) -> PathBuf {
    tape_journal::files::page_path(dir, name, no)
}

/// Writes `bytes` at `offset` of file `path` (pwrite), as a cut-off writer
/// or a disk error would leave them.
pub fn pwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open page file");
    f.write_all_at(bytes, offset).expect("pwrite");
}

/// Reads `len` bytes at `offset` of file `path` (pread).
pub fn pread(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).expect("open page file");
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, offset).expect("pread");
    v
}

/// Every file of a folder with its bytes, sorted by name.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Copies every file of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Encodes frames into a page image the way FORMAT.md describes, for the
/// parser tests: `page_len` bytes, frames with payloads of the given lengths
/// while they fit (leaving 8 bytes for the end-of-page marker), then the
/// marker when `end` is set. Returns the image and the number of frames put.
pub fn model_page(page_len: usize, sizes: &[usize], end: bool) -> (Vec<u8>, usize) {
    let mut page = vec![0u8; page_len];
    let h = PageHeader::new(Geometry::new(PAGE), PAGE, 1, 1);
    page[..64].copy_from_slice(&h.to_bytes());
    let mut off = 64usize;
    let mut put = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let size = (FRAME_HEADER_LEN + n + 7) & !7;
        if off + size + 8 > page_len {
            break;
        }
        let seq = i as u64 + 1;
        let mut p = vec![0u8; n];
        fill_payload(seq, &mut p);
        let fh = FrameHeader {
            len: (FRAME_HEADER_LEN + n) as u32,
            msg_type: 1,
            seq,
            time_ns: 1000 + seq as i64,
            source: 0,
            dest: 0,
            corr: 0,
            crc: checksum(&p),
            flags: 0,
        };
        page[off..off + FRAME_HEADER_LEN].copy_from_slice(&fh.to_bytes());
        page[off + FRAME_HEADER_LEN..off + FRAME_HEADER_LEN + n].copy_from_slice(&p);
        off += size;
        put += 1;
    }
    if end {
        page[off..off + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    }
    (page, put)
}
