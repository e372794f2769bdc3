//! Two machines on one: a source root and a replica root, each with its own
//! `tape service`; `tape bridge serve` and `tape bridge pull` as real
//! processes whose stderr is collected; a raw bridge client; frame-by-frame
//! comparison of two journals.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tape_bridge::wire::{self, Hello, Kind};
use tape_bridge::Token;
use tape_journal::{Cursor, CursorOptions, Start};

/// The token the tests serve with.
pub const TOKEN: &str = "k7Q2-test-token-8d1f";

/// A root with its own running service: one "machine".
pub struct Side {
    pub root: Root,
    /// Kept running for the side's life.
    _service: Service,
}

impl Side {
    pub fn new() -> Side {
        let root = Root::new();
        let service = Service::start(&root);
        Side {
            root,
            _service: service,
        }
    }

    /// A side whose service also serves `/metrics`; returns its address.
    pub fn with_metrics() -> (Side, String) {
        let root = Root::new();
        let (kid, addr) = crate::top_metrics::metrics_service(&root);
        let sock = root.socket();
        wait_until("the service socket", || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        let side = Side {
            root,
            _service: Service { kid },
        };
        (side, addr)
    }

    /// A token file holding `token`, in this root.
    pub fn token_file(&self, token: &str) -> PathBuf {
        let p = self.root.path().join(format!("token-{}", token.len()));
        std::fs::write(&p, format!("{token}\n")).unwrap();
        p
    }

    /// A cursor over `journal` in this root from its first frame, checking
    /// every frame's CRC.
    pub fn cursor(&self, journal: &str) -> Result<Cursor, tape_journal::OpenError> {
        Cursor::open(
            &self.root.journal_dir(),
            journal,
            Start::First,
            CursorOptions {
                verify_crc: true,
                populate: false,
            },
        )
    }

    /// Last sequence number of `journal` (0: none or no journal).
    pub fn last_seq(&self, journal: &str) -> u64 {
        tape_journal::stats(&self.root.journal_dir(), journal).map_or(0, |s| s.last_seq)
    }

    /// Waits until `journal` has `n` frames, failing if it gets more.
    pub fn wait_seq(&self, journal: &str, n: u64) {
        let d = Deadline::after(Duration::from_secs(120));
        loop {
            let last = self.last_seq(journal);
            assert!(
                last <= n,
                "{journal} has seq {last}, more than the {n} written"
            );
            if last == n {
                return;
            }
            d.check(&format!("{journal} to reach seq {n} (at {last})"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Lines a child writes on stderr, collected by a thread (and echoed to the
/// test's own stderr so a failing test shows them).
#[derive(Clone)]
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Log {
    pub fn of(r: impl Read + Send + 'static, tag: &'static str) -> Log {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { return };
                eprintln!("[{tag}] {line}");
                l.lock().unwrap().push(line);
            }
        });
        Log { lines }
    }

    pub fn all(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line for which `pred` holds, waiting for it.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let d = Deadline::new();
        loop {
            if let Some(l) = self.all().into_iter().find(|l| pred(l)) {
                return l;
            }
            d.check(&format!("a log line: {what}"));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.all().iter().filter(|l| pred(l)).count()
    }
}

/// A running `tape bridge serve`.
pub struct Serve {
    pub kid: Kid,
    pub addr: String,
    pub log: Log,
}

impl Serve {
    /// `tape bridge serve --listen <listen> <args>` on `side`; waits for
    /// its "listening on" line.
    pub fn start(side: &Side, listen: &str, args: &[&str]) -> Serve {
        let mut cmd = side.root.tape("bridge", &["serve", "--listen", listen]);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut kid = Kid::spawn("tape bridge serve", &mut cmd);
        let log = Log::of(kid.child.stderr.take().unwrap(), "serve");
        let line = log.wait_for("serve listening", |l| l.contains("listening on"));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("an address after 'listening on'")
            .to_string();
        Serve { kid, addr, log }
    }

    /// With the token file of the tests, on an ephemeral loopback port.
    pub fn with_token(side: &Side, args: &[&str]) -> Serve {
        let tok = side.token_file(TOKEN);
        let mut a = vec!["--token-file", tok.to_str().unwrap()];
        a.extend_from_slice(args);
        Serve::start(side, "127.0.0.1:0", &a)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.kid.pid()
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        self.kid.exited().is_none()
    }
}

/// `RssAnon` of process `pid` in KiB.
pub fn rss_anon_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("RssAnon:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A running `tape bridge pull`.
pub struct Pull {
    pub kid: Kid,
    pub log: Log,
}

impl Pull {
    /// `tape bridge pull --from <addr> <args>` on `side`.
    pub fn start(side: &Side, addr: &str, args: &[&str]) -> Pull {
        let mut cmd = side.root.tape("bridge", &["pull", "--from", addr]);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut kid = Kid::spawn("tape bridge pull", &mut cmd);
        let log = Log::of(kid.child.stderr.take().unwrap(), "pull");
        Pull { kid, log }
    }

    /// Pulls `journals` with the tests' token as account `account`.
    pub fn with_token(side: &Side, addr: &str, account: &str, journals: &[&str]) -> Pull {
        let tok = side.token_file(TOKEN);
        let mut a = vec!["--token-file", tok.to_str().unwrap(), "--account", account];
        for j in journals {
            a.extend(["--journal", j]);
        }
        Pull::start(side, addr, &a)
    }
}

/// Asserts that `journal` on `dst` holds exactly the frames of `journal`
/// on `src`, byte for byte (header and payload), `n` of them, from seq 1.
pub fn assert_same_frames(src: &Side, dst: &Side, journal: &str, into: &str, n: u64) {
    let open = |side: &Side, j: &str| side.cursor(j).unwrap_or_else(|e| panic!("open {j}: {e}"));
    let mut a = open(src, journal);
    let mut b = open(dst, into);
    let mut count = 0u64;
    loop {
        let fa = a.next().expect("read the source");
        let fb = b.next().expect("read the replica");
        match (fa, fb) {
            (None, None) => break,
            (Some(fa), Some(fb)) => {
                count += 1;
                assert_eq!(fa.seq(), count, "source seq");
                assert_eq!(fb.seq(), count, "replica seq");
                assert_eq!(fa.raw(), fb.raw(), "frame seq {count} differs");
            }
            (Some(fa), None) => panic!("the replica ends before seq {}", fa.seq()),
            (None, Some(fb)) => panic!("the replica has seq {} past the source", fb.seq()),
        }
    }
    assert_eq!(count, n, "frames in {journal}");
}

/// Lines `1\n` to `n\n`, each padded with `x` to `width` bytes.
pub fn wide_lines(range: std::ops::RangeInclusive<u64>, width: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in range {
        let s = i.to_string();
        v.extend_from_slice(s.as_bytes());
        v.extend(std::iter::repeat_n(b'x', width.saturating_sub(s.len())));
        v.push(b'\n');
    }
    v
}

/// A hand-driven bridge client, to misbehave on purpose.
pub struct RawClient {
    pub s: TcpStream,
    pub port: u16,
}

impl RawClient {
    pub fn connect(addr: &str) -> RawClient {
        let s = TcpStream::connect(addr).expect("connect to the bridge");
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        let port = s.local_addr().unwrap().port();
        RawClient { s, port }
    }

    /// Sends a hello and reads the challenge; returns (client, server)
    /// nonces.
    pub fn hello(&mut self) -> ([u8; 32], [u8; 32]) {
        let c = tape_bridge::auth::nonce().unwrap();
        let hello = Hello {
            version: wire::VERSION,
            nonce: c,
        };
        self.s.write_all(&hello.encode(Kind::Hello)).unwrap();
        let mut buf = [0u8; wire::HEADER_LEN + wire::HELLO_LEN];
        std::io::Read::read_exact(&mut self.s, &mut buf).expect("the challenge");
        let ch = Hello::decode(&buf[8..]).expect("a challenge");
        (c, ch.nonce)
    }

    /// Hello, auth with `token`; returns whether the welcome came.
    pub fn auth(&mut self, token: &Token) -> bool {
        let (c, s) = self.hello();
        let proof = token.client_proof(&c, &s);
        self.s
            .write_all(&wire::encode_mac(Kind::Auth, &proof))
            .unwrap();
        let mut buf = [0u8; wire::HEADER_LEN + wire::MAC_LEN];
        std::io::Read::read_exact(&mut self.s, &mut buf).is_ok()
    }

    /// Authenticates with the tests' token and subscribes to `journals`
    /// from their start; reads the `subscribed` answer.
    pub fn subscribe(&mut self, account: &str, journals: &[&str]) {
        assert!(self.auth(&Token::new(TOKEN)), "the welcome");
        let sub = wire::Subscribe {
            account: account.into(),
            journals: journals
                .iter()
                .map(|j| wire::Want {
                    journal: j.to_string(),
                    from_seq: 0,
                })
                .collect(),
        };
        self.s.write_all(&sub.encode()).unwrap();
        let mut hdr = [0u8; 8];
        std::io::Read::read_exact(&mut self.s, &mut hdr).unwrap();
        let h = wire::Header::parse(&hdr);
        assert_eq!(h.kind, Kind::Subscribed as u32, "subscribed");
        let mut body = vec![0u8; h.len as usize];
        std::io::Read::read_exact(&mut self.s, &mut body).unwrap();
    }

    /// Reads until the server closes; returns every byte it sent.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.s.read_to_end(&mut v);
        v
    }
}
