//! The writer's sync counter (`Writer::sync_stats`) under each policy, on a
//! root on disk (`/var/tmp` when it is a disk, else the temporary folder:
//! the counts are the same on tmpfs, where a sync does nothing).

use std::time::Duration;
use tape_service::Service;
use tape_writer::{SyncPolicy, Writer};

fn root() -> tempfile::TempDir {
    let base = std::path::Path::new("/var/tmp");
    let mut b = tempfile::Builder::new();
    b.prefix("tape-writer-sync-");
    if base.is_dir() {
        b.tempdir_in(base).unwrap()
    } else {
        b.tempdir().unwrap()
    }
}

/// Writes 200-byte frames until the writer made `switches` page switches;
/// returns the counter, read after the writer is dropped (the close's sync
/// included).
fn write_pages(policy: SyncPolicy, switches: u64) -> tape_writer::SyncStats {
    let root = root();
    let _s = Service::start(root.path()).unwrap();
    let mut w = Writer::builder("md")
        .root(root.path())
        .page_size(1 << 20)
        .sync(policy)
        .create()
        .unwrap();
    let stats = w.sync_stats().clone();
    while w.appender().page_switches() < switches {
        w.write(1, &[5u8; 200]).unwrap();
    }
    w.write(1, b"last").unwrap();
    drop(w);
    stats
}

#[test]
fn the_writer_counts_the_syncs_of_each_policy() {
    let none = write_pages(SyncPolicy::None, 3);
    assert_eq!((none.syncs(), none.dir_syncs(), none.failures()), (0, 0, 0));
    // Three pages left, and the fourth at the close: one msync and one
    // folder fsync each.
    let page = write_pages(SyncPolicy::Page, 3);
    assert_eq!((page.syncs(), page.dir_syncs(), page.failures()), (4, 4, 0));
    // The interval thread: at least one sync per page it passed (their
    // ends) and the folder once per page passed.
    let interval = write_pages(SyncPolicy::Interval(Duration::from_millis(5)), 3);
    assert!(interval.syncs() >= 3, "{}", interval.syncs());
    assert_eq!((interval.dir_syncs(), interval.failures()), (3, 0));
    assert_eq!(interval.last_failure(), None);
}
