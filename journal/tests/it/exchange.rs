//! The page exchange between a cursor and its helper thread: pages handed
//! over without a lock, the pages left unmapped, the helper asleep when
//! nothing happens.

use crate::common::{background, payload, Deadline, PAGE};
use std::time::{Duration, Instant};
use tape_journal::{Appender, Cursor, CursorOptions, PageHelper, Start};

fn opts() -> CursorOptions {
    CursorOptions {
        verify_crc: true,
        populate: true,
    }
}

/// How many of the journal's page files this process has mapped read-only
/// (the readers' mappings; the writer's are read-write).
fn mapped_pages(name: &str) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter(|l| l.contains(&format!("/{name}.")) && l.ends_with(".journal"))
        .filter(|l| l.split_whitespace().nth(1) == Some("r--s"))
        .count()
}

/// Reads every frame the writer has published; returns the next seq.
fn drain(c: &mut Cursor, mut seq: u64) -> u64 {
    while let Some(f) = c.next().unwrap() {
        assert_eq!(f.seq(), seq);
        assert_eq!(f.payload(), &payload(seq, 300)[..]);
        seq += 1;
    }
    seq
}

#[test]
fn helper_hands_each_next_page_over_and_unmaps_the_ones_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appender::create(dir.path(), "ex", background()).unwrap();
    app.write(1, &payload(1, 300)).unwrap();
    let helper = PageHelper::spawn("tape-it-pages", None).unwrap();
    let mut c = Cursor::open(dir.path(), "ex", Start::First, opts()).unwrap();
    helper.add(&mut c);
    let deadline = Deadline::secs(60);
    let (mut written, mut read) = (1u64, 1u64);
    let mut handed_over = 0;
    while app.position().0 < 12 {
        // Write to three quarters of the page, read it all (the cursor
        // then waits past half way), and give the helper time to map the
        // next page: the cursor takes it at an empty poll after its next
        // 4 KiB crossing.
        let page = app.position().0;
        while app.position().0 == page && (app.position().1 as u64) < PAGE * 3 / 4 {
            written += 1;
            app.write(1, &payload(written, 300)).unwrap();
        }
        read = drain(&mut c, read);
        let since = Instant::now();
        while !c.page_state().1 && since.elapsed() < Duration::from_secs(2) {
            deadline.check("burst past the last eighth");
            std::thread::sleep(Duration::from_millis(5));
            for _ in 0..40 {
                written += 1;
                app.write(1, &payload(written, 300)).unwrap();
            }
            read = drain(&mut c, read);
        }
        handed_over += usize::from(c.page_state().1);
        // The rest of the page and into the next.
        while app.position().0 == page {
            written += 1;
            app.write(1, &payload(written, 300)).unwrap();
        }
        read = drain(&mut c, read);
        assert_eq!(c.page_state().0, page + 1);
    }
    assert_eq!(read, written + 1, "every frame read, in order");
    // Under load the helper may be late now and then (the cursor then maps
    // the page itself); it must have been on time for most pages.
    assert!(
        handed_over >= 8,
        "only {handed_over} of 11 pages mapped ahead"
    );
    // The pages left are handed back at an empty poll and unmapped by the
    // helper: only the current page (and the next, if mapped) stay.
    let since = Instant::now();
    while mapped_pages("ex") > 2 && since.elapsed() < Duration::from_secs(5) {
        assert!(c.next().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        mapped_pages("ex") <= 2,
        "{} pages mapped",
        mapped_pages("ex")
    );
    drop(c);
    drop(helper);
    assert_eq!(mapped_pages("ex"), 0);
}

#[test]
fn cursor_without_a_ready_page_maps_it_itself() {
    // A helper that never gets half way (the cursor jumps through pages
    // written while it slept) leaves stale pages at most: nothing is lost
    // and nothing stays mapped.
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appender::create(dir.path(), "jump", background()).unwrap();
    let helper = PageHelper::spawn("tape-it-pages", None).unwrap();
    app.write(1, &payload(1, 300)).unwrap();
    let mut c = Cursor::open(dir.path(), "jump", Start::First, opts()).unwrap();
    helper.add(&mut c);
    let mut written = 1;
    let mut read = 1;
    for round in 0..6 {
        while app.position().0 < 2 * round + 2 {
            written += 1;
            app.write(1, &payload(written, 300)).unwrap();
        }
        read = drain(&mut c, read);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(read, written + 1);
    drop(c);
    drop(helper);
    assert_eq!(mapped_pages("jump"), 0);
}

/// Wake-ups of this process's thread named `name`: its voluntary context
/// switches (each sleep ends in one wake). Involuntary ones are
/// preemptions while it runs, which a loaded machine (the test suite's
/// other binaries) adds without the thread waking more often.
fn switches_of(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

#[test]
fn idle_helper_sleeps() {
    // With nothing to read, the helper looks less and less often, up to
    // MAX_LOOK apart: about 60 wakes in its first second (it used to wake
    // every millisecond, 1000). A busy machine only makes it wake less.
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appender::create(dir.path(), "idle", background()).unwrap();
    app.write(1, b"x").unwrap();
    let helper = PageHelper::spawn("tape-it-idle", None).unwrap();
    let mut c = Cursor::open(dir.path(), "idle", Start::First, opts()).unwrap();
    helper.add(&mut c);
    assert!(c.next().unwrap().is_some());
    let before = switches_of("tape-it-idle");
    std::thread::sleep(Duration::from_secs(1));
    let wakes = switches_of("tape-it-idle") - before;
    eprintln!("idle helper: {wakes} wakes in 1 s");
    assert!(wakes < 250, "an idle helper woke {wakes} times in a second");
    assert!(c.next().unwrap().is_none());
}

#[test]
fn backlog_read_without_a_pause_finds_each_next_page_mapped() {
    // Catching up on pages written before: no empty poll between switches.
    // The cursor tells the helper at the switch itself that it moved on, so
    // the helper maps every next page while the cursor reads this one.
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appender::create(dir.path(), "backlog", background()).unwrap();
    let mut written = 0u64;
    while app.position().0 < 13 {
        written += 1;
        app.write(1, &payload(written, 300)).unwrap();
    }
    let helper = PageHelper::spawn("tape-it-pages", None).unwrap();
    let mut c = Cursor::open(dir.path(), "backlog", Start::First, opts()).unwrap();
    helper.add(&mut c);
    let mut read = 0u64;
    while let Some(f) = c.next().unwrap() {
        read += 1;
        assert_eq!(f.seq(), read);
        if read % 200 == 0 {
            // Time for the helper, as a reader busy with each frame gives.
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    assert_eq!(read, written);
    assert_eq!(c.page_state().0, 13);
    // The first page's next one may be late (the helper starts cold).
    assert!(
        c.pages_mapped_here() <= 1,
        "{} of 13 switches mapped by the reading thread",
        c.pages_mapped_here()
    );
}

#[test]
fn next_page_is_mapped_after_a_burst_read_past_the_last_eighth() {
    // A switch, then a burst read to 15/16 of the new page before any
    // empty poll: the helper must still learn where the cursor is and map
    // the page after.
    let dir = tempfile::tempdir().unwrap();
    let mut app = Appender::create(dir.path(), "burst", background()).unwrap();
    let helper = PageHelper::spawn("tape-it-pages", None).unwrap();
    app.write(1, &payload(1, 300)).unwrap();
    let mut c = Cursor::open(dir.path(), "burst", Start::First, opts()).unwrap();
    helper.add(&mut c);
    let mut written = 1;
    let mut read = drain(&mut c, 1);
    let deadline = Deadline::secs(60);
    // Page 1 to three quarters, idle until page 2 is mapped ahead.
    while (app.position().1 as u64) < PAGE * 3 / 4 {
        written += 1;
        app.write(1, &payload(written, 300)).unwrap();
    }
    read = drain(&mut c, read);
    while !c.page_state().1 {
        deadline.check("burst past the last eighth");
        std::thread::sleep(Duration::from_millis(5));
        for _ in 0..20 {
            written += 1;
            app.write(1, &payload(written, 300)).unwrap();
        }
        read = drain(&mut c, read);
    }
    // The rest of page 1 and 15/16 of page 2, read in one burst.
    while app.position().0 == 1 || (app.position().1 as u64) < PAGE * 15 / 16 {
        written += 1;
        app.write(1, &payload(written, 300)).unwrap();
    }
    read = drain(&mut c, read);
    assert_eq!(c.page_state().0, 2);
    // Idle long enough for the helper's slowest look, then on to page 3.
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.next().unwrap().is_none());
    while app.position().0 < 3 {
        written += 1;
        app.write(1, &payload(written, 300)).unwrap();
    }
    read = drain(&mut c, read);
    assert_eq!(read, written + 1);
    assert_eq!(c.page_state().0, 3);
    assert_eq!(c.pages_mapped_here(), 0, "page 3 was not mapped ahead");
}
