//! A writer or reader given only a folder registers with the service of the
//! root that folder belongs to, not with `$TAPE_ROOT`'s; where no root
//! holds the folder, the error names the socket it tried. And a writer
//! keeping pages ahead can wait for them.

use std::time::Duration;
use tape_reader::{Reader, Start};
use tape_service::{Client, Service};
use tape_writer::Writer;

/// One test function for everything that depends on `TAPE_ROOT`: it sets
/// the variable for the whole process.
#[test]
fn a_folder_registers_with_its_own_root() {
    let default_root = tempfile::tempdir().unwrap();
    // The default root has no service: anything registering there fails.
    std::env::set_var("TAPE_ROOT", default_root.path());

    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let _sa = Service::start(a.path()).unwrap();
    let _sb = Service::start(b.path()).unwrap();
    let dir_a = tape_journal::journal_dir(a.path());
    let dir_b = tape_journal::journal_dir(b.path());

    assert_eq!(tape_journal::root_of(&dir_a).as_deref(), Some(a.path()));
    assert_eq!(tape_journal::root_of(a.path()).as_deref(), Some(a.path()));
    assert_eq!(tape_journal::root_of(default_root.path()), None);

    let mut w = Writer::create(&dir_a, "md").unwrap();
    assert_eq!(w.root(), a.path());
    assert_eq!(w.write(1, b"tick").unwrap(), 1);
    let mut wb = Writer::builder("ticks").dir(&dir_b).create().unwrap();
    wb.write(1, b"t").unwrap();

    let journals = Client::connect(a.path()).unwrap().journals().unwrap();
    let md = journals
        .iter()
        .find(|j| j.journal == "md")
        .expect("md registered with root a");
    assert_eq!(md.writer.as_ref().unwrap().pid, std::process::id());
    // A second writer of a's journal is refused by a's service.
    let again = Writer::create(&dir_a, "md").unwrap_err().to_string();
    assert!(again.contains("held by another writer"), "{again}");

    // A reader of root b registers each journal with the root it belongs
    // to, and reads both.
    let mut r = Reader::builder("strategy")
        .root(b.path())
        .start(Start::First)
        .create()
        .unwrap();
    r.add_journal(&dir_a, "md").unwrap();
    r.add_journal(&dir_b, "ticks").unwrap();
    assert!(r.is_registered());
    let in_a = Client::connect(a.path()).unwrap().journals().unwrap();
    let md = in_a.iter().find(|j| j.journal == "md").unwrap();
    assert_eq!(md.readers.len(), 1, "{md:?}");
    let in_b = Client::connect(b.path()).unwrap().journals().unwrap();
    let ticks = in_b.iter().find(|j| j.journal == "ticks").unwrap();
    assert_eq!(ticks.readers.len(), 1, "{ticks:?}");
    assert!(
        !in_b.iter().any(|j| j.journal == "md"),
        "md must not be registered with root b: {in_b:?}"
    );
    let mut got = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && std::time::Instant::now() < until {
        if let Some(f) = r.next().unwrap() {
            got.push(f.payload().to_vec());
        }
    }
    assert_eq!(got, [b"tick".to_vec(), b"t".to_vec()]);

    // A folder no root holds: the default root's service is tried, and the
    // error says which socket; nothing is created.
    let loose = tempfile::tempdir().unwrap();
    let err = Writer::create(loose.path(), "x").unwrap_err().to_string();
    let socket = tape_service::socket_path(default_root.path());
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert!(std::fs::read_dir(loose.path()).unwrap().next().is_none());
}

#[test]
fn pages_ahead_can_be_waited_for() {
    let root = tempfile::tempdir().unwrap();
    let _s = Service::start(root.path()).unwrap();
    let w = Writer::builder("md")
        .root(root.path())
        .page_size(1 << 20)
        .pages_ahead(6)
        .create()
        .unwrap();
    assert_eq!(w.wait_pages_ready(Duration::from_secs(60)), 6);
    assert_eq!(w.pages_ready(), 6);
    let dir = tape_journal::journal_dir(root.path());
    for no in 2..=7 {
        assert!(
            tape_journal::files::page_path(&dir, "md", no).exists(),
            "page {no}"
        );
    }
}
