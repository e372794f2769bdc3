//! Wrong token, no token, garbage, a huge length, a silent peer: each is
//! refused with a log line naming its address, gets nothing (nothing at
//! all, or only the challenge when it got as far as a hello), and the
//! server stays up and goes on serving.

use crate::bridge::setup::*;
use crate::common::*;
use std::io::Write;
use tape_bridge::wire::{self, Kind};
use tape_bridge::Token;

#[test]
fn bad_peers_are_refused_logged_and_get_nothing() {
    let src = Side::new();
    let dst = Side::new();
    write_journal(&src.root, "md", &lines(1..=1000));
    let mut serve = Serve::with_token(&src, &[]);
    let addr = serve.addr.clone();

    // Each misbehaving peer on its own thread (the silent one takes the
    // 5 s handshake deadline). Each returns (its port, bytes it got).
    let peer = |f: fn(&mut RawClient)| {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut c = RawClient::connect(&addr);
            f(&mut c);
            (c.port, c.read_to_end())
        })
    };
    let wrong = peer(|c| {
        let welcome = c.auth(&Token::new("not-the-token"));
        assert!(!welcome, "a wrong token got a welcome");
    });
    let none = peer(|c| {
        assert!(!c.auth(&Token::none()), "no token got a welcome");
    });
    let garbage = peer(|c| {
        c.s.write_all(b"GET / HTTP/1.1\r\nHost: tape\r\n\r\n")
            .unwrap();
    });
    let huge = peer(|c| {
        let mut m = Vec::new();
        wire::put_header(&mut m, Kind::Hello, 0xFFFF_FFF0);
        c.s.write_all(&m).unwrap();
    });
    let silent = peer(|_| {});
    let huge_after_auth = peer(|c| {
        assert!(c.auth(&Token::new(TOKEN)));
        let mut m = Vec::new();
        wire::put_header(&mut m, Kind::Subscribe, 1 << 31);
        c.s.write_all(&m).unwrap();
    });

    let (port, got) = wrong.join().unwrap();
    assert_eq!(got.len(), 0, "wrong token: nothing after the challenge");
    serve.log.wait_for("wrong token refused", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}: wrong token"))
    });
    let (port, got) = none.join().unwrap();
    assert_eq!(got.len(), 0, "no token: nothing after the challenge");
    serve.log.wait_for("no token refused", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}: no token"))
    });
    let (port, got) = garbage.join().unwrap();
    assert_eq!(got.len(), 0, "garbage: not a byte");
    serve.log.wait_for("garbage refused", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}: sent garbage"))
    });
    let (port, got) = huge.join().unwrap();
    assert_eq!(got.len(), 0, "huge length: not a byte");
    serve.log.wait_for("huge length refused", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}:")) && l.contains("4294967280 bytes")
    });
    let (port, got) = huge_after_auth.join().unwrap();
    assert_eq!(got.len(), 0, "huge subscribe: nothing after the welcome");
    serve.log.wait_for("huge subscribe refused", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}:")) && l.contains("2147483648 bytes")
    });
    let (port, got) = silent.join().unwrap();
    assert_eq!(got.len(), 0, "silent peer: not a byte");
    serve.log.wait_for("silent peer dropped", |l| {
        l.contains(&format!("refused 127.0.0.1:{port}:")) && l.contains("silent peer")
    });

    // The real pull with a wrong token, and with none: a clear error and a
    // non-zero exit, logged on the server too.
    let bad = dst.token_file("wrong-token-123");
    let o = run(
        &mut dst.root.tape(
            "bridge",
            &[
                "pull",
                "--from",
                &addr,
                "--journal",
                "md",
                "--token-file",
                bad.to_str().unwrap(),
            ],
        ),
        b"",
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refused the token") && err.contains("--token-file"),
        "{err}"
    );
    let o = run(
        &mut dst
            .root
            .tape("bridge", &["pull", "--from", &addr, "--journal", "md"]),
        b"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused the token"));
    // The server logs each refusal too (its line may come a moment after
    // the pull has exited).
    wait_until("the server to log both pulls' refusals", || {
        serve.log.count(|l| l.contains("wrong token")) >= 2
            && serve.log.count(|l| l.contains("no token")) >= 2
    });

    // Still up, still serving.
    assert!(serve.alive(), "the server survived");
    let _pull = Pull::with_token(&dst, &addr, "acct-ok", &["md"]);
    dst.wait_seq("md", 1000);
    assert_same_frames(&src, &dst, "md", "md", 1000);
    assert!(serve.alive());
}

#[test]
fn clear_errors_for_what_retrying_cannot_mend() {
    let src = Side::new();
    let dst = Side::new();
    write_journal(&src.root, "md", &lines(1..=10));
    let serve = Serve::with_token(&src, &["--journal", "md"]);
    let tok = dst.token_file(TOKEN);
    let tok = tok.to_str().unwrap();
    // `tape bridge pull` of `journal` into `root`, which must fail: its
    // standard error.
    let pull_fails = |root: &Root, journal: &str| -> String {
        let o = run(
            &mut root.tape(
                "bridge",
                &[
                    "pull",
                    "--from",
                    &serve.addr,
                    "--journal",
                    journal,
                    "--token-file",
                    tok,
                ],
            ),
            b"",
        );
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };

    // A journal the server does not expose.
    let err = pull_fails(&dst.root, "secret");
    assert!(err.contains("journal secret is not served"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // A replica that is ahead of its source.
    write_journal(&dst.root, "md", &lines(1..=20));
    let err = pull_fails(&dst.root, "md");
    assert!(
        err.contains("holds seq 20 but the source ends at seq 10"),
        "{err}"
    );

    // No service on the replica's root.
    let bare = Root::new();
    let err = pull_fails(&bare, "md");
    assert!(err.contains("service"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // No token on an address other machines reach.
    let o = run(
        &mut src.root.tape("bridge", &["serve", "--listen", "0.0.0.0:0"]),
        b"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token-file"));

    // --into must pair with --journal.
    let o = run(
        &mut dst.root.tape(
            "bridge",
            &[
                "pull",
                "--from",
                &serve.addr,
                "--journal",
                "a",
                "--journal",
                "b",
                "--into",
                "c",
            ],
        ),
        b"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("one --into per --journal"));
}
