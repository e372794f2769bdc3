//! The writer's example, run as a newcomer runs it: a process that writes
//! ticks to `md` of the root in `$TAPE_ROOT`, with a service running there.

use std::process::Command;
use tape_reader::{Reader, ServiceMode, Start};

#[test]
fn the_ticks_example_writes_what_it_says() {
    let root = tape_testkit::Root::new();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let mut cmd = Command::new(tape_testkit::example_bin("ticks"));
    cmd.arg("500").env("TAPE_ROOT", root.path());
    tape_testkit::harden(&mut cmd);
    let out = cmd.output().expect("run the ticks example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
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
