//! The Reader's merge over many journals written live: every frame once, in
//! write-time order, journals idle or created after the reader started.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tape_journal::{AppendOptions, Appender};
use tape_reader::{Reader, ServiceMode, Start};

const JOURNALS: usize = 40;
const FRAMES: u64 = 5_000;

#[test]
fn forty_live_journals_merge_in_time_order_every_frame_once() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    // Half the journals exist before the reader starts; the rest appear
    // while it reads (it waits for them), and journal 0 stays idle.
    for i in 0..JOURNALS / 2 {
        Appender::create(dir.path(), &format!("j{i}"), opts).unwrap();
    }
    let mut r = Reader::builder("merge-test")
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap();
    for i in 0..JOURNALS {
        assert_eq!(r.add_journal(dir.path(), &format!("j{i}")).unwrap(), i);
    }
    let writers: Vec<_> = (1..JOURNALS)
        .map(|i| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut app = Appender::create(&dir, &format!("j{i}"), opts).unwrap();
                for n in 0..FRAMES {
                    // Bursts and pauses, different in each journal.
                    if n % (50 + i as u64 * 7) == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    app.write(i as u32, &n.to_le_bytes()).unwrap();
                }
            })
        })
        .collect();
    let want = (JOURNALS as u64 - 1) * FRAMES;
    let mut next_of: HashMap<usize, u64> = HashMap::new();
    let mut got = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < want {
        assert!(Instant::now() < deadline, "only {got} of {want} frames");
        let Some(f) = r.next().unwrap() else {
            r.housekeeping();
            continue;
        };
        let i = f.journal;
        assert_eq!(f.msg_type(), i as u32, "frame from journal {i}");
        let n = u64::from_le_bytes(f.payload().try_into().unwrap());
        let expect = next_of.entry(i).or_insert(0);
        assert_eq!(n, *expect, "journal {i}: frame {n} where {expect} was due");
        *expect += 1;
        // Across journals written live, a frame published later may carry
        // an earlier time than one already returned; the exact order is
        // checked on journals written beforehand (the next test).
        got += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(r.next().unwrap().is_none());
    assert!(!next_of.contains_key(&0), "journal 0 was never written");
    for i in 1..JOURNALS {
        assert_eq!(next_of[&i], FRAMES, "journal {i}");
    }
}

#[test]
fn journals_written_before_reading_come_back_in_exact_time_order() {
    // Everything written first: then the merge must be exactly the order
    // of write times across the journals (ties to the lower index).
    let dir = tempfile::tempdir().unwrap();
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let k = 33;
    let mut apps: Vec<Appender> = (0..k)
        .map(|i| Appender::create(dir.path(), &format!("j{i}"), opts).unwrap())
        .collect();
    let mut all = Vec::new();
    for n in 0..60_000u64 {
        // An uneven spread: some journals far busier than others.
        let i = ((n * 2654435761) % 97) as usize % k;
        let seq = apps[i].write(0, &n.to_le_bytes()).unwrap();
        all.push((apps[i].last_time_ns(), i, seq));
    }
    all.sort();
    let mut r = Reader::builder("exact")
        .service(ServiceMode::Never)
        .start(Start::First)
        .create()
        .unwrap();
    for i in 0..k {
        r.add_journal(dir.path(), &format!("j{i}")).unwrap();
    }
    for (t, i, seq) in all {
        let f = r.next().unwrap().expect("a frame");
        assert_eq!((f.time_ns(), f.journal, f.seq()), (t, i, seq));
    }
    assert!(r.next().unwrap().is_none());
}

#[test]
fn a_journal_the_service_refuses_leaves_the_merge_as_it_was() {
    // Registration is refused for a folder whose name is not UTF-8: the
    // reader must go on reading the journals it has, as if the refused one
    // had never been asked for.
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let dir = tape_journal::journal_dir(root.path());
    let odd = root.path().join(std::ffi::OsStr::from_bytes(b"odd\xff"));
    std::fs::create_dir_all(&odd).unwrap();
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let mut a = Appender::create(&dir, "a", opts).unwrap();
    let mut b = Appender::create(&dir, "b", opts).unwrap();
    let mut c = Appender::create(&odd, "c", opts).unwrap();
    a.write(1, b"a1").unwrap();
    b.write(2, b"b1").unwrap();
    c.write(3, b"c1").unwrap();
    let mut r = Reader::builder("refused")
        .root(root.path())
        .service(ServiceMode::Required)
        .start(Start::First)
        .create()
        .unwrap();
    r.add_journal(&dir, "a").unwrap();
    r.add_journal(&dir, "b").unwrap();
    assert!(r.add_journal(&odd, "c").is_err());
    assert_eq!(r.journals(), 2);
    let mut got = Vec::new();
    while let Some(f) = r.next().unwrap() {
        got.push(f.payload().to_vec());
    }
    assert_eq!(got, [b"a1".to_vec(), b"b1".to_vec()]);
    // Added again from a folder it accepts, it is read.
    let mut c2 = Appender::create(&dir, "c", opts).unwrap();
    c2.write(3, b"c2").unwrap();
    assert_eq!(r.add_journal(&dir, "c").unwrap(), 2);
    assert_eq!(r.next().unwrap().unwrap().payload(), b"c2");
}
