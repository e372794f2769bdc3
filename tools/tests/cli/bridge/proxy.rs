//! A TCP proxy between pull and serve that cuts the connection in the
//! middle of a batch, then corrupts one byte of a batch on the next
//! connection: the replica still gets every frame once, none corrupt.

use crate::bridge::setup::*;
use crate::common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use tape_bridge::wire::{Header, Kind, HEADER_LEN};

/// What the proxy does to the server's bytes on one connection.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// Forward half of batch number `n` (from 1), then cut both sides.
    CutInBatch(u32),
    /// Flip one bit in the middle of batch number `n`'s frames.
    CorruptBatch(u32),
    /// Forward everything.
    Pass,
}

struct Proxy {
    addr: String,
    events: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Listens on an ephemeral port; connection `i` gets `plan[i]`, the
    /// ones after the plan pass through.
    fn start(upstream: &str, plan: Vec<Action>) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = Arc::clone(&events);
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for (i, client) in l.incoming().enumerate() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let action = plan.get(i).copied().unwrap_or(Action::Pass);
                let ev = Arc::clone(&ev);
                // Client to server: as is.
                let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut s2);
                    let _ = s2.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || down(i, server, client, action, &ev));
            }
        });
        Proxy { addr, events }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// Server to client, message by message, applying `action`.
fn down(
    conn: usize,
    mut server: TcpStream,
    mut client: TcpStream,
    action: Action,
    ev: &Mutex<Vec<String>>,
) {
    let mut batches = 0u32;
    loop {
        let mut hdr = [0u8; HEADER_LEN];
        if server.read_exact(&mut hdr).is_err() {
            break;
        }
        let h = Header::parse(&hdr);
        let mut body = vec![0u8; h.len as usize];
        if server.read_exact(&mut body).is_err() {
            break;
        }
        if h.kind == Kind::Batch as u32 {
            batches += 1;
            match action {
                Action::CutInBatch(n) if n == batches => {
                    let half = body.len() / 2;
                    let _ = client.write_all(&hdr);
                    let _ = client.write_all(&body[..half]);
                    ev.lock().unwrap().push(format!(
                        "conn {conn}: cut in batch {n} after {half} of {} bytes",
                        body.len()
                    ));
                    // A clean end (FIN) right there, as a dropped link
                    // that the kernel closed would give.
                    let _ = client.shutdown(Shutdown::Write);
                    let _ = server.shutdown(Shutdown::Both);
                    return;
                }
                Action::CorruptBatch(n) if n == batches => {
                    let at = 16 + (body.len() - 20) / 2;
                    body[at] ^= 0x04;
                    ev.lock().unwrap().push(format!(
                        "conn {conn}: flipped a bit at byte {at} of batch {n}"
                    ));
                }
                _ => {}
            }
        }
        if client.write_all(&hdr).is_err() || client.write_all(&body).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

#[test]
fn cut_mid_batch_and_corrupt_byte_lose_nothing_and_write_nothing_bad() {
    let src = Side::new();
    let dst = Side::new();
    // Enough frames waiting that the first batches are full ones.
    write_journal(&src.root, "md", &lines(1..=200_000));
    let serve = Serve::with_token(&src, &[]);
    let proxy = Proxy::start(
        &serve.addr,
        vec![Action::CutInBatch(3), Action::CorruptBatch(4), Action::Pass],
    );
    let mut pull = Pull::with_token(&dst, &proxy.addr, "acct-p", &["md"]);

    // More frames while it runs.
    let mut w = LiveWriter::start(&src.root, "md");
    w.send(&lines(200_001..=300_000));
    w.finish();
    dst.wait_seq("md", 300_000);

    let ev = proxy.events();
    assert!(ev.iter().any(|e| e.contains("cut in batch 3")), "{ev:?}");
    assert!(ev.iter().any(|e| e.contains("flipped a bit")), "{ev:?}");
    // The pull saw both: the cut, and the checksum that caught the flip.
    pull.log
        .wait_for("the cut", |l| l.contains("in the middle of a message"));
    pull.log.wait_for("the bad batch", |l| {
        l.contains("checksum mismatch") && l.contains("not written")
    });
    wait_until("the pull to log its third connection", || {
        pull.log.count(|l| l.contains("connected to")) >= 3
    });
    assert_same_frames(&src, &dst, "md", "md", 300_000);
    ok(&mut dst.root.tape("verify", &["md"]), b"");
    assert!(pull.kid.exited().is_none());
}
