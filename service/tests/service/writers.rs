//! One writer per journal: refusal, freeing on drop and on SIGKILL, and
//! the directory queries over many journals.

use super::*;

#[test]
fn second_writer_is_refused_and_drop_frees_at_once() {
    let _w = watchdog("second_writer");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let first = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(first.is_registered());
    let err = WriterLease::acquire(root.path(), &dir, "md").unwrap_err();
    let me = std::process::id();
    assert!(matches!(err, RegisterError::Held { pid, .. } if pid == me));
    assert_eq!(
        err.to_string(),
        format!("journal md is held by another writer (pid {me})")
    );
    // The same name in another folder is another journal.
    let other_dir = root.path().join("elsewhere");
    let _other = WriterLease::acquire(root.path(), &other_dir, "md").unwrap();
    // A relative spelling of the same folder is the same journal.
    let dotted = dir.join("..").join("journal");
    assert!(matches!(
        WriterLease::acquire(root.path(), &dotted, "md"),
        Err(RegisterError::Held { .. })
    ));

    drop(first);
    // No waiting: the journal is free as soon as the lease is dropped.
    let again = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(again.is_registered());
}

#[test]
fn killed_child_writer_frees_journal_at_once() {
    let _w = watchdog("killed_child");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let child = RoleChild::spawn("writer", root.path());
    let child_pid = child.pid();
    let mut client = Client::connect(root.path()).unwrap();
    let js = client.journals().unwrap();
    assert_eq!(js.len(), 1);
    assert_eq!(js[0].writer.as_ref().unwrap().pid, child_pid);
    match WriterLease::acquire(root.path(), &dir, "md") {
        Err(RegisterError::Held { pid, .. }) => assert_eq!(pid, child_pid),
        other => panic!("expected held by the child, got {other:?}"),
    }

    child.kill9();
    // The child is reaped, so the kernel has closed its socket: the journal
    // must be free now, without any retry.
    let lease = WriterLease::acquire(root.path(), &dir, "md").unwrap();
    assert!(lease.is_registered());
    let js = client.journals().unwrap();
    assert_eq!(js[0].writer.as_ref().unwrap().pid, std::process::id());
}

#[test]
fn find_list_count_over_pages() {
    let _w = watchdog("find_list_count");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = journal_dir(root.path());

    let readers: Vec<ReaderLease> = (0..50)
        .map(|i| {
            ReaderLease::acquire(
                root.path(),
                &format!("reader-{i:02}"),
                &[(dir.clone(), format!("j{}", i % 3))],
            )
            .unwrap()
        })
        .collect();
    let mut client = Client::connect(root.path()).unwrap();
    assert_eq!(client.count().unwrap(), 50);

    let mut seen = Vec::new();
    for page in 0.. {
        let peers = client.list(page, 7).unwrap();
        if peers.is_empty() {
            break;
        }
        assert!(peers.len() <= 7);
        seen.extend(peers);
    }
    assert_eq!(seen.len(), 50, "every reader exactly once");
    assert!(seen.windows(2).all(|w| w[0].id < w[1].id), "stable order");
    let mut names: Vec<_> = seen.iter().map(|p| p.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 50);

    let p = client.find("reader-17").unwrap().unwrap();
    assert_eq!(p.pid, std::process::id());
    assert_eq!(p.kind, tape_service::PeerKind::Reader);
    assert_eq!(p.journals[0].journal, "j2");
    assert!(p.since_ns > 0);
    assert!(client.find("nobody").unwrap().is_none());

    let js = client.journals().unwrap();
    assert_eq!(js.len(), 3);
    assert_eq!(js.iter().map(|j| j.readers.len()).sum::<usize>(), 50);

    assert!(matches!(
        client.list(0, 0),
        Err(tape_service::QueryError::Refused {
            code: ErrorCode::Invalid,
            ..
        })
    ));
    drop(readers);
    assert_eq!(client.count().unwrap(), 0);
}
