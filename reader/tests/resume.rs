//! Reader positions and resuming ([`ReaderBuilder::resume`]): what `next`
//! records, what `commit` commits, where a resuming reader starts, who
//! deletes the files, and the one live reader of a name per journal.

use std::path::Path;
use tape_journal::position::{list_positions, position_path, readers_dir, PositionView};
use tape_journal::{AppendOptions, Appender};
use tape_reader::{AddError, Found, PositionError, Reader, ServiceMode, Start};

fn appender(dir: &Path, name: &str) -> Appender {
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    Appender::create(dir, name, opts).unwrap()
}

fn write(a: &mut Appender, from: u64, to: u64) {
    for i in from..=to {
        assert_eq!(a.write(1, &i.to_le_bytes()).unwrap(), i);
    }
}

fn reader(name: &str, start: Start, resume: bool) -> Reader {
    let b = Reader::builder(name)
        .service(ServiceMode::Never)
        .start(start);
    let b = if resume { b.resume() } else { b };
    b.create().unwrap()
}

/// Reads up to `n` frames: (journal name, seq).
fn take(r: &mut Reader, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::new();
    while got.len() < n {
        match r.next().unwrap() {
            Some(f) => got.push((f.journal_name.to_string(), f.seq())),
            None => break,
        }
    }
    got
}

fn seqs(v: &[(String, u64)]) -> Vec<u64> {
    v.iter().map(|(_, s)| *s).collect()
}

#[test]
fn a_resuming_reader_continues_after_its_last_commit_and_replays_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 10);
    let mut r = reader("strat", Start::First, true);
    r.add_journal(dir.path(), "md").unwrap();
    assert_eq!(seqs(&take(&mut r, 4)), [1, 2, 3, 4]);
    r.commit();
    // Handed out after the commit: not committed.
    assert_eq!(seqs(&take(&mut r, 2)), [5, 6]);
    let pos = r.position(0).expect("a position file");
    assert_eq!((pos.seen_seq(), pos.committed_seq()), (6, 4));
    drop(r);

    // The start asked for is ignored where a position is kept.
    let mut r = reader("strat", Start::End, true);
    r.add_journal(dir.path(), "md").unwrap();
    assert_eq!(
        seqs(&take(&mut r, 100)),
        [5, 6, 7, 8, 9, 10],
        "5 and 6 again"
    );
    r.commit();
    drop(r);
    write(&mut md, 11, 12);
    let mut r = reader("strat", Start::First, true);
    r.add_journal(dir.path(), "md").unwrap();
    assert_eq!(seqs(&take(&mut r, 100)), [11, 12]);
}

#[test]
fn a_new_resuming_position_counts_its_start_as_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 5);
    let mut r = reader("late", Start::End, true);
    r.add_journal(dir.path(), "md").unwrap();
    let v = PositionView::open(&position_path(dir.path(), "md", "late")).unwrap();
    assert_eq!((v.seen_seq, v.committed_seq), (5, 5));
    assert!(v.committed_ns > 0 && v.resumes());
    assert_eq!(v.holder, Some(std::process::id()));
    write(&mut md, 6, 7);
    assert_eq!(seqs(&take(&mut r, 1)), [6]);
    // Killed before any commit: restarts at its start, not at seq 1.
    drop(r);
    let mut r = reader("late", Start::First, true);
    r.add_journal(dir.path(), "md").unwrap();
    assert_eq!(seqs(&take(&mut r, 100)), [6, 7]);
}

#[test]
fn next_records_each_frame_handed_out_per_journal_and_commit_commits_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = appender(dir.path(), "a");
    let mut b = appender(dir.path(), "b");
    write(&mut a, 1, 3);
    write(&mut b, 1, 2);
    let mut r = reader("merge", Start::First, true);
    r.add_journal(dir.path(), "a").unwrap();
    r.add_journal(dir.path(), "b").unwrap();
    let got = take(&mut r, 100);
    assert_eq!(got.len(), 5);
    let view = |j: &str| PositionView::open(&position_path(dir.path(), j, "merge")).unwrap();
    assert_eq!((view("a").seen_seq, view("a").committed_seq), (3, 0));
    assert_eq!((view("b").seen_seq, view("b").committed_seq), (2, 0));
    assert_eq!(view("a").lag(3), 0);
    r.commit();
    assert_eq!(view("a").committed_seq, 3);
    assert_eq!(view("b").committed_seq, 2);
    // A peeked frame is not handed out: not seen, not committed.
    write(&mut a, 4, 4);
    assert!(r.next_time().unwrap().is_some());
    r.commit();
    assert_eq!((view("a").seen_seq, view("a").committed_seq), (3, 3));
    assert_eq!(view("a").lag(4), 1);
}

#[test]
fn a_reader_that_does_not_resume_deletes_its_files_and_one_that_does_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 3);
    let mut r = reader("once", Start::First, false);
    r.add_journal(dir.path(), "md").unwrap();
    take(&mut r, 2);
    let v = list_positions(dir.path(), "md").unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].reader.as_str(), v[0].seen_seq), ("once", 2));
    assert!(!v[0].resumes() && v[0].is_live());
    drop(r);
    assert!(list_positions(dir.path(), "md").unwrap().is_empty());
    assert!(!readers_dir(dir.path(), "md").exists());

    let mut r = reader("kept", Start::First, true);
    r.add_journal(dir.path(), "md").unwrap();
    take(&mut r, 1);
    r.commit();
    drop(r);
    let v = list_positions(dir.path(), "md").unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].reader.as_str(), v[0].committed_seq), ("kept", 1));
    assert!(!v[0].is_live());
    // A reader of that name that does not resume would delete it: refused.
    let mut r = reader("kept", Start::First, false);
    match r.add_journal(dir.path(), "md") {
        Err(AddError::Position(e @ PositionError::Kept { .. })) => {
            assert!(e.to_string().contains("resume"), "{e}")
        }
        other => panic!("expected Kept, got {other:?}"),
    }
    assert_eq!(r.journals(), 0);
    assert!(position_path(dir.path(), "md", "kept").exists());
}

#[test]
fn a_second_live_reader_of_the_same_name_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 1);
    let mut r1 = reader("dup", Start::First, true);
    r1.add_journal(dir.path(), "md").unwrap();
    let mut r2 = reader("dup", Start::First, true);
    let e = r2.add_journal(dir.path(), "md").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())) && msg.contains("\"dup\""),
        "{msg}"
    );
    assert_eq!(r2.journals(), 0);
    // Its refusal changed nothing of the first one's position.
    assert_eq!(seqs(&take(&mut r1, 10)), [1]);
    r1.commit();
    drop(r1);
    r2.add_journal(dir.path(), "md").unwrap();
    assert_eq!(r2.position(0).unwrap().committed_seq(), 1);
}

#[test]
fn a_journal_that_appears_later_is_resumed_from_its_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let mut r = reader("early", Start::End, true);
    // The folder is not there yet: the resuming reader makes it.
    r.add_journal(&jdir, "md").unwrap();
    assert!(position_path(&jdir, "md", "early").exists());
    assert!(take(&mut r, 1).is_empty());
    // A replica journal starting at seq 100.
    let mut md = appender(&jdir, "md");
    for s in 100..=102u64 {
        md.write_replica(s, tape_journal::clock::now_ns(), &Default::default(), b"x")
            .unwrap();
    }
    r.housekeeping();
    assert_eq!(seqs(&take(&mut r, 1)), [100]);
    // Killed before a commit: it starts at the journal's first frame again.
    drop(r);
    let mut r = reader("early", Start::End, true);
    r.add_journal(&jdir, "md").unwrap();
    assert_eq!(seqs(&take(&mut r, 10)), [100, 101, 102]);
    r.commit();
    drop(r);
    let mut r = reader("early", Start::End, true);
    r.add_journal(&jdir, "md").unwrap();
    assert!(take(&mut r, 10).is_empty());
}

#[test]
fn a_position_the_journal_cannot_continue_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 5);
    let mut r = reader("gone", Start::First, true);
    r.add_journal(dir.path(), "md").unwrap();
    take(&mut r, 5);
    r.commit();
    drop(r);
    drop(md);
    // The journal is made again, shorter.
    for p in tape_journal::list_pages(dir.path(), "md").unwrap() {
        std::fs::remove_file(dir.path().join(format!("md.{p:08}.journal"))).unwrap();
    }
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 2);
    let mut r = reader("gone", Start::First, true);
    match r.add_journal(dir.path(), "md") {
        Err(AddError::Resume(e)) => {
            assert_eq!((e.committed_seq, e.found), (5, Found::EndsAt(2)));
            assert!(e.to_string().contains("delete the position file"), "{e}");
        }
        other => panic!("expected Resume, got {other:?}"),
    }
    // Left as it was, for the operator to decide.
    let v = PositionView::open(&position_path(dir.path(), "md", "gone")).unwrap();
    assert_eq!(v.committed_seq, 5);
}

#[test]
fn a_reader_whose_name_cannot_name_a_file_reads_without_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut md = appender(dir.path(), "md");
    write(&mut md, 1, 2);
    let mut r = reader("my strategy/1", Start::First, false);
    r.add_journal(dir.path(), "md").unwrap();
    assert!(r.position(0).is_none());
    assert_eq!(seqs(&take(&mut r, 10)), [1, 2]);
    r.commit();
    let mut r = reader("my strategy/1", Start::First, true);
    match r.add_journal(dir.path(), "md") {
        Err(AddError::Position(PositionError::BadReaderName(_))) => {}
        other => panic!("expected BadReaderName, got {other:?}"),
    }
}
