//! The writer's example, run as a newcomer runs it: a process that writes
//! ticks to `md` of the root in `$TAPE_ROOT`, with a service running there.

use tape_reader::{Reader, ServiceMode, Start};
use tape_testkit::{example, stdout_of};

#[test]
fn the_ticks_example_writes_what_it_says() {
    let root = tape_testkit::Root::new();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let said = stdout_of(example("ticks", root.path()).arg("500"));
    assert!(said.contains("wrote 500 frames to md"), "{said}");
    assert!(said.contains("last seq 500"), "{said}");

    let mut r = Reader::builder("check")
        .root(root.path())
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap();
    r.add_journal(root.journal_dir(), "md").unwrap();
    let mut n = 0u64;
    while let Some(f) = r.next().unwrap() {
        n += 1;
        assert_eq!(f.seq(), n);
        assert_eq!(f.payload(), format!("tick {n}").as_bytes());
    }
    assert_eq!(n, 500);
}
