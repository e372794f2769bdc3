//! The reader's example, run as a newcomer runs it: two journals written
//! interleaved come back merged in write-time order, with no service.

use tape_journal::{AppendOptions, Appender};
use tape_testkit::{example, stdout_of};

#[test]
fn the_merge_example_prints_both_journals_in_time_order() {
    let root = tape_testkit::Root::new();
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let mut md = Appender::create(&root.journal_dir(), "md", opts).unwrap();
    let mut ticks = Appender::create(&root.journal_dir(), "ticks", opts).unwrap();
    for i in 0..50 {
        md.write(1, format!("md {i}").as_bytes()).unwrap();
        ticks.write(1, format!("ticks {i}").as_bytes()).unwrap();
    }
    drop((md, ticks));

    let text = stdout_of(example("merge", root.path()).args(["md", "ticks"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100, "{text}");
    let mut last_time = 0i64;
    for (k, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.splitn(4, ' ').collect();
        let (journal, i) = if k % 2 == 0 {
            ("md", k / 2)
        } else {
            ("ticks", k / 2)
        };
        assert_eq!(f[0], journal, "{line}");
        assert_eq!(f[1], (i + 1).to_string(), "{line}");
        let t: i64 = f[2].parse().unwrap();
        assert!(t >= last_time, "out of time order: {line}");
        last_time = t;
        assert_eq!(f[3], format!("{journal} {i}"));
    }
}
