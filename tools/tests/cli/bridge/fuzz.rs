//! Random and mutated byte streams into a running `tape bridge serve`, at
//! every step of the protocol.
//!
//! The wire decoders have their own property tests (random bodies into
//! every decoder, random frames behind a valid batch checksum:
//! `bridge/src/wire.rs`); this feeds the real server through its socket,
//! message framing, handshake and ack reading included. Each peer sends 0
//! to 3 messages right (hello, auth, subscribe), then something wrong
//! where the next message belongs: random bytes, the right message with
//! bytes changed, cut short, or a header of any kind and length with a
//! random body. Then it closes its side and reads what the server sends
//! until the server closes.
//!
//! The server stays up; a peer that has not proved the token gets nothing
//! but the challenge (nothing at all before a well-formed hello); every
//! connection ends with one log line naming the peer; the server's memory
//! stays bounded; and afterwards a real pull gets every frame of the
//! source, equal byte for byte.
//!
//! The other way round, a hostile server that knows the token feeds a
//! real `tape bridge pull`: it answers 0 to 3 messages right (challenge,
//! welcome, subscribed, then a few real batches from the source), then
//! something wrong in the same ways. The pull never panics: it goes on
//! (reconnecting) or exits 1 with a one-sentence error; its replica is
//! always a prefix of the source, frame for frame; and once a real server
//! takes the address, it completes the replica.

use crate::bridge::setup::*;
use crate::common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tape_bridge::wire::{
    self, BatchBuilder, Header, Hello, JournalState, Kind, HEADER_LEN, HELLO_LEN, MAC_LEN,
};
use tape_bridge::Token;
use tape_journal::{Cursor, CursorOptions, Start};

/// Frames in the source journal.
const FRAMES: u64 = 2000;
/// Peers at once.
const THREADS: u64 = 4;
/// The bound on the server's anonymous memory (heap and stacks).
const RSS_ANON_LIMIT_KIB: u64 = 48 * 1024;

/// SplitMix64, seeded from `TAPE_FUZZ_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What one peer did and got.
struct Peer {
    port: u16,
    /// Messages it sent right before the wrong part.
    right: u64,
    /// Bytes of the wrong part.
    sent: usize,
}

/// The wrong part, where `next` (the message a well-behaved peer would
/// send now) belongs; `next` itself with bytes changed only if `mutate`.
fn wrong(rng: &mut Rng, next: &[u8], mutate_ok: bool) -> Vec<u8> {
    let mutate = |rng: &mut Rng, m: &[u8]| {
        let mut m = m.to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(m.len() as u64) as usize;
            m[i] ^= 1 + rng.below(255) as u8;
        }
        m
    };
    let pick = match rng.below(6) {
        1 | 5 if !mutate_ok => 2,
        k => k,
    };
    match pick {
        0 => {
            let n = rng.below(2048) as usize;
            rng.bytes(n)
        }
        1 => mutate(rng, next),
        2 => next[..rng.below(next.len() as u64) as usize].to_vec(),
        3 | 4 => {
            // A header of any kind (mostly real ones) and any length
            // (mostly small), and a random body.
            let kind = match rng.below(4) {
                0 => rng.next() as u32,
                _ => rng.below(13) as u32,
            };
            let len = match rng.below(4) {
                0 => rng.next() as u32,
                1 => 0,
                _ => rng.below(600) as u32,
            };
            let mut m = Vec::new();
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&kind.to_le_bytes());
            let body = rng.below(u64::from(len.min(700)) + 1) as usize;
            m.extend(rng.bytes(body));
            m
        }
        _ => {
            let mut m = mutate(rng, next);
            let n = rng.below(512) as usize;
            m.extend(rng.bytes(n));
            m
        }
    }
}

/// Reads until the server closes (a reset counts as closing); fails as
/// hung at the watchdog.
fn read_to_close(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("watchdog: the server neither answered nor closed {what}")
            }
            Err(_) => return got,
        }
    }
}

/// One hostile peer.
fn peer(addr: &str, rng: &mut Rng, id: u64) -> Peer {
    let mut s = TcpStream::connect(addr).expect("connect to the bridge");
    s.set_read_timeout(Some(WATCHDOG)).unwrap();
    let port = s.local_addr().unwrap().port();
    let what = format!("peer {id} (port {port})");
    let right = rng.below(4);
    let token = Token::new(TOKEN);
    let client_nonce = tape_bridge::auth::nonce().unwrap();
    let hello = Hello {
        version: wire::VERSION,
        nonce: client_nonce,
    }
    .encode(Kind::Hello);
    let mut next = hello;
    if right >= 1 {
        s.write_all(&next).unwrap();
        let mut m = [0u8; HEADER_LEN + HELLO_LEN];
        s.read_exact(&mut m).expect("the challenge");
        let challenge = Hello::decode(&m[HEADER_LEN..]).expect("a challenge");
        let proof = token.client_proof(&client_nonce, &challenge.nonce);
        next = wire::encode_mac(Kind::Auth, &proof);
    }
    if right >= 2 {
        s.write_all(&next).unwrap();
        let mut m = [0u8; HEADER_LEN + MAC_LEN];
        s.read_exact(&mut m).expect("the welcome");
        assert_eq!(
            Header::parse(m[..HEADER_LEN].try_into().unwrap()).kind,
            Kind::Welcome as u32
        );
        next = wire::Subscribe {
            account: format!("fuzz-{id}"),
            journals: vec![wire::Want {
                journal: "md".into(),
                from_seq: rng.below(3) * rng.below(FRAMES),
            }],
        }
        .encode();
    }
    if right >= 3 {
        s.write_all(&next).unwrap();
        next = wire::encode_ack(&[rng.below(FRAMES)]);
    }
    let bad = wrong(rng, &next, true);
    // The server may have closed already: that is its right.
    let _ = s.write_all(&bad);
    let _ = s.shutdown(Shutdown::Write);
    let got = read_to_close(&mut s, &what);
    match right {
        // Before a well-formed hello: nothing; after one: the challenge.
        0 => {
            assert!(
                got.len() <= HEADER_LEN + HELLO_LEN,
                "{what}: got {} bytes without a hello and a token",
                got.len()
            );
            if got.len() >= HEADER_LEN {
                let h = Header::parse(got[..HEADER_LEN].try_into().unwrap());
                assert_eq!(
                    (h.kind, h.len as usize),
                    (Kind::Challenge as u32, HELLO_LEN),
                    "{what}: not a challenge"
                );
            }
        }
        // The challenge was read: nothing more without the token.
        1 => assert!(
            got.is_empty(),
            "{what}: got {} bytes after a wrong auth",
            got.len()
        ),
        _ => {}
    }
    Peer {
        port,
        right,
        sent: bad.len(),
    }
}

fn seed() -> u64 {
    let seed = match std::env::var("TAPE_FUZZ_SEED") {
        Ok(s) => s.parse().expect("TAPE_FUZZ_SEED is a number"),
        Err(_) => tape_journal::clock::now_ns() as u64,
    };
    eprintln!("bridge fuzz: seed {seed} (set TAPE_FUZZ_SEED to repeat)");
    seed
}

fn fuzz(peers: u64) {
    let seed = seed();
    let src = Side::new();
    let dst = Side::new();
    write_journal(&src.root, "md", &lines(1..=FRAMES));
    let mut serve = Serve::with_token(&src, &[]);
    let addr = serve.addr.clone();

    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss, pid) = (Arc::clone(&stop), Arc::clone(&max_rss), serve.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Some(kib) = rss_anon_kib(pid) {
                    max_rss.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ t.wrapping_mul(0xA076_1D64_78BD_642F));
                (0..peers / THREADS)
                    .map(|i| peer(&addr, &mut rng, t * peers + i))
                    .collect::<Vec<Peer>>()
            })
        })
        .collect();
    let mut done = Vec::new();
    for w in workers {
        done.extend(w.join().expect("a peer failed"));
    }
    assert!(serve.alive(), "the server died: {:#?}", serve.log.all());

    // Every connection ended with its log line.
    let d = Deadline::new();
    let mut missing: Vec<u16> = done.iter().map(|p| p.port).collect();
    while !missing.is_empty() {
        let log = serve.log.all();
        missing.retain(|port| {
            let refused = format!("refused 127.0.0.1:{port}:");
            let left = format!("@127.0.0.1:{port} left: ");
            let sub_refused = format!("@127.0.0.1:{port} refused: ");
            !log.iter()
                .any(|l| l.contains(&refused) || l.contains(&left) || l.contains(&sub_refused))
        });
        d.check(&format!(
            "the server to log the end of {} peers",
            missing.len()
        ));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Release);
    sampler.join().unwrap();
    let rss = max_rss.load(Ordering::Relaxed);
    assert!(
        rss <= RSS_ANON_LIMIT_KIB,
        "the server's anonymous memory reached {rss} KiB"
    );

    // Still serving, and what it serves is right.
    assert!(serve.alive(), "the server died: {:#?}", serve.log.all());
    let _pull = Pull::with_token(&dst, &addr, "acct-after", &["md"]);
    dst.wait_seq("md", FRAMES);
    assert_same_frames(&src, &dst, "md", "md", FRAMES);
    ok(&mut src.root.tape("verify", &["md"]), b"");
    assert!(serve.alive());
    let by = |r: u64| done.iter().filter(|p| p.right == r).count();
    println!(
        "bridge fuzz: {} peers (messages right before the wrong part: none {}, hello {}, hello+auth {}, hello+auth+subscribe {}), {} wrong bytes sent; server up, anonymous memory at most {} KiB; a pull then got all {FRAMES} frames",
        done.len(),
        by(0),
        by(1),
        by(2),
        by(3),
        done.iter().map(|p| p.sent).sum::<usize>(),
        rss
    );
}

/// One session of the hostile server with a connected pull: `right`
/// messages answered right, then a wrong one. Returns the frames sent in
/// good batches.
fn hostile_session(s: &mut TcpStream, rng: &mut Rng, right: u64, src: &Side, frames: u64) -> u64 {
    let token = Token::new(TOKEN);
    let mut m = [0u8; HEADER_LEN + HELLO_LEN];
    s.read_exact(&mut m).expect("the pull's hello");
    let hello = Hello::decode(&m[HEADER_LEN..]).expect("a hello");
    let server_nonce = tape_bridge::auth::nonce().unwrap();
    let challenge = Hello {
        version: wire::VERSION,
        nonce: server_nonce,
    }
    .encode(Kind::Challenge);
    if right == 0 {
        let _ = s.write_all(&wrong(rng, &challenge, true));
        return 0;
    }
    s.write_all(&challenge).unwrap();
    let mut m = [0u8; HEADER_LEN + MAC_LEN];
    s.read_exact(&mut m).expect("the pull's auth");
    let welcome = wire::encode_mac(
        Kind::Welcome,
        &token.server_proof(&hello.nonce, &server_nonce),
    );
    if right == 1 {
        let _ = s.write_all(&wrong(rng, &welcome, true));
        return 0;
    }
    s.write_all(&welcome).unwrap();
    let mut hdr = [0u8; HEADER_LEN];
    s.read_exact(&mut hdr).expect("the pull's subscribe");
    let len = Header::parse(&hdr)
        .expect(Kind::Subscribe, "subscribe", wire::MAX_SUBSCRIBE, false)
        .expect("a subscribe");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("the pull's subscribe");
    let sub = wire::Subscribe::decode(&body).expect("a subscribe");
    let subscribed = wire::encode_subscribed(&[JournalState {
        page_size: 1 << 20,
        last_seq: frames,
    }]);
    if right == 2 {
        // Not mutated: a changed page size would make a replica of
        // another page size (the authenticated server's word), which is
        // not what this tests.
        let _ = s.write_all(&wrong(rng, &subscribed, false));
        return 0;
    }
    s.write_all(&subscribed).unwrap();
    let start = match sub.journals[0].from_seq {
        0 => Start::First,
        n => Start::Seq(n),
    };
    let mut c = Cursor::open(
        &src.root.journal_dir(),
        "md",
        start,
        CursorOptions::default(),
    )
    .expect("open the source");
    let mut b = BatchBuilder::new();
    let mut sent = 0;
    let good = rng.below(3);
    for k in 0..=good {
        b.clear();
        for _ in 0..1 + rng.below(300) {
            match c.next().expect("read the source") {
                Some(f) => b.push(f.seq(), f.raw()),
                None => break,
            }
        }
        let next = if b.count() > 0 {
            b.finish(0).to_vec()
        } else {
            wire::encode_heartbeat().to_vec()
        };
        if k < good {
            if s.write_all(&next).is_err() {
                break;
            }
            sent += u64::from(b.count());
        } else {
            let _ = s.write_all(&wrong(rng, &next, true));
        }
    }
    sent
}

/// Checks that the replica's frames are the source's first ones; returns
/// how many it has.
fn assert_prefix(src: &Side, dst: &Side) -> u64 {
    let Ok(mut b) = dst.cursor("md") else {
        return 0;
    };
    let mut a = src.cursor("md").expect("open the source");
    let mut n = 0;
    while let Some(fb) = b.next().expect("read the replica") {
        n += 1;
        let fa = a.next().expect("read the source").expect("a source frame");
        assert_eq!(
            fb.raw(),
            fa.raw(),
            "replica frame {n} differs from the source"
        );
    }
    n
}

/// A pull that ended must have ended as designed: exit 1, one sentence.
fn check_pull_exit(pull: &mut Pull, session: u64) {
    let st = pull.kid.wait();
    pull.log
        .wait_for("the pull's error line", |l| l.starts_with("tape: "));
    let all = pull.log.all();
    assert!(
        st.code() == Some(1)
            && !all.iter().any(|l| l.contains("panicked"))
            && pull.log.count(|l| l.starts_with("tape: ")) == 1,
        "session {session}: the pull ended with {st}: {all:#?}"
    );
}

/// `sessions` hostile sessions over a source of `n` frames.
fn hostile_server(sessions: u64, n: u64) {
    let mut rng = Rng(seed());
    let src = Side::new();
    let dst = Side::new();
    write_journal(&src.root, "md", &lines(1..=n));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut pull = Pull::with_token(&dst, &addr, "acct-fuzz", &["md"]);
    let (mut exits, mut frames) = (0u64, 0u64);
    let mut by = [0u64; 4];
    for session in 0..sessions {
        let d = Deadline::new();
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if pull.kid.exited().is_some() {
                check_pull_exit(&mut pull, session);
                exits += 1;
                pull = Pull::with_token(&dst, &addr, "acct-fuzz", &["md"]);
            }
            d.check(&format!("session {session}: the pull to connect"));
            std::thread::sleep(Duration::from_millis(2));
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(WATCHDOG)).unwrap();
        let right = rng.below(4);
        by[right as usize] += 1;
        frames += hostile_session(&mut s, &mut rng, right, &src, n);
        drop(s);
        assert_prefix(&src, &dst);
    }
    drop(listener);
    let had = assert_prefix(&src, &dst);

    // A real server on the same address: the pull completes the replica.
    let tok = src.token_file(TOKEN);
    let serve = Serve::start(&src, &addr, &["--token-file", tok.to_str().unwrap()]);
    // The last hostile session may still be ending the pull (an error
    // message it read just before the connection closed): a pull that
    // exits meanwhile, as designed, is started again, however late.
    let d = Deadline::after(Duration::from_secs(120));
    while dst.last_seq("md") < n {
        if pull.kid.exited().is_some() {
            check_pull_exit(&mut pull, sessions);
            exits += 1;
            pull = Pull::with_token(&dst, &addr, "acct-fuzz", &["md"]);
        }
        d.check(&format!("md to reach seq {n} (at {})", dst.last_seq("md")));
        std::thread::sleep(Duration::from_millis(20));
    }
    dst.wait_seq("md", n);
    assert_same_frames(&src, &dst, "md", "md", n);
    ok(&mut dst.root.tape("verify", &["md"]), b"");
    assert!(pull.kid.exited().is_none(), "the pull still runs");
    drop(serve);
    println!(
        "bridge fuzz (hostile server): {sessions} sessions (answered right before the wrong part: none {}, challenge {}, +welcome {}, +subscribed and 0 to 2 batches {}), {frames} frames in good batches, pull exits (exit 1, one sentence) {exits}, panics 0; replica a prefix of the source throughout ({had} of {n} frames when it ended), then complete from a real server",
        by[0], by[1], by[2], by[3]
    );
}

#[test]
fn random_bytes_at_every_step_never_break_a_running_server() {
    fuzz(200);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli bridge::fuzz -- --ignored --nocapture"]
fn random_bytes_at_every_step_long() {
    fuzz(5000);
}

#[test]
fn a_hostile_server_never_breaks_a_pull_or_its_replica() {
    hostile_server(60, FRAMES);
}

#[test]
#[ignore = "long form: cargo test -p tape-tools --test cli bridge::fuzz -- --ignored --nocapture"]
fn a_hostile_server_long() {
    hostile_server(1000, 50_000);
}
