//! Hostile input to the service protocol, measured: the decoder never
//! panics and allocates a bounded amount whatever the bytes, and a live
//! service fed random byte streams on many connections keeps serving, with
//! its registered writer untouched and no thread of it panicking.
//!
//! Allocation is measured by a global allocator that counts the bytes live
//! on the current thread and their peak (the decoder runs on one thread).

#[global_allocator]
static ALLOC: tape_testkit::alloc::Counting = tape_testkit::alloc::Counting;

use proptest::prelude::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use tape_service::protocol::{decode_request, read_frame, MAX_REQUEST};
use tape_testkit::alloc::peak_of;

/// The bound the decoder keeps: a fixed part, plus a multiple of the body
/// (serde_json builds a value tree: each JSON value is a 32-byte node,
/// each object entry a key and a map node).
fn bound(body: usize) -> usize {
    64 * 1024 + 48 * body
}

/// Bodies built to be expensive: many tiny values, deep nesting, many
/// keys, escapes, big numbers; with a request type so that the typed
/// decoding runs too.
fn adversarial(n: usize) -> Vec<Vec<u8>> {
    let rep = |unit: &dyn Fn(usize) -> String, head: &str, tail: &str| -> Vec<u8> {
        let mut s = String::from(head);
        for i in 0.. {
            let u = unit(i);
            if s.len() + u.len() + tail.len() > n {
                break;
            }
            s.push_str(&u);
        }
        if s.ends_with(',') {
            s.pop();
        }
        s.push_str(tail);
        s.into_bytes()
    };
    vec![
        rep(&|_| "0,".into(), "[", "]"),
        rep(&|_| "[],".into(), "[", "]"),
        rep(
            &|_| "{},".into(),
            r#"{"type":"register_reader","name":"x","journals":["#,
            "]}",
        ),
        rep(
            &|i| format!(r#"{{"dir":"/{i}","journal":"j"}},"#),
            r#"{"type":"register_reader","name":"x","journals":["#,
            "]}",
        ),
        rep(&|i| format!(r#""{i:x}":0,"#), "{", "}"),
        rep(&|i| format!(r#""{i:x}":{{}},"#), r#"{"type":"count","#, "}"),
        rep(
            &|_| r#"\u0000"#.into(),
            r#"{"type":"find","name":""#,
            r#""}"#,
        ),
        rep(&|_| "1e308,".into(), r#"{"type":"count","x":["#, "]}"),
        rep(&|_| "[".into(), "", ""),
        format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes(),
    ]
}

#[test]
fn decoder_allocation_is_bounded_on_expensive_bodies() {
    let mut worst = 0f64;
    for n in [64, 1024, 16 * 1024, MAX_REQUEST] {
        for body in adversarial(n) {
            assert!(body.len() <= MAX_REQUEST);
            let (_, peak) = peak_of(|| decode_request(&body));
            assert!(
                peak <= bound(body.len()),
                "{} bytes starting {:?}: {peak} bytes allocated",
                body.len(),
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            if n == MAX_REQUEST && body.len() > 1024 {
                worst = worst.max(peak as f64 / body.len() as f64);
            }
        }
    }
    eprintln!("decoder: worst peak allocation for a 64 KiB body: {worst:.1} bytes per body byte");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any byte stream through framing and decoding: no panic, the frame
    /// buffer never above the request limit, the decoding within the bound.
    #[test]
    fn any_stream_decodes_within_bounds(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        len in prop_oneof![Just(None), (0u32..70_000).prop_map(Some), any::<u32>().prop_map(Some)],
    ) {
        let mut wire = Vec::new();
        if let Some(l) = len {
            wire.extend_from_slice(&l.to_le_bytes());
        }
        wire.extend_from_slice(&bytes);
        let mut cur = std::io::Cursor::new(&wire);
        let mut buf = Vec::new();
        for _ in 0..16 {
            let (r, peak) = peak_of(|| read_frame(&mut cur, MAX_REQUEST, &mut buf));
            prop_assert!(peak <= MAX_REQUEST, "framing allocated {peak}");
            if r.is_err() {
                break;
            }
            let (_, peak) = peak_of(|| decode_request(&buf));
            prop_assert!(peak <= bound(buf.len()), "decoding allocated {peak} for {}", buf.len());
        }
    }

    /// JSON-shaped bodies with every request type and random fields.
    #[test]
    fn json_bodies_decode_within_bounds(
        ty in prop_oneof![
            Just("hello".to_string()), Just("register_writer".to_string()),
            Just("register_reader".to_string()), Just("add_journal".to_string()),
            Just("find".to_string()), Just("list".to_string()), Just("count".to_string()),
            Just("journals".to_string()), "[a-z_]{0,12}",
        ],
        fields in proptest::collection::vec(
            ("[a-z_]{1,10}", prop_oneof![
                Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string()),
                any::<i64>().prop_map(|v| v.to_string()), any::<u64>().prop_map(|v| v.to_string()),
                "\"[ -~]{0,40}\"".prop_map(|s| s.replace('\\', "/")), "\"/[a-z/.]{0,40}\"",
                proptest::collection::vec("\"[a-z]{0,6}\"", 0..30).prop_map(|v| format!("[{}]", v.join(","))),
            ]),
            0..8,
        ),
    ) {
        let mut body = format!("{{\"type\":\"{ty}\"");
        for (k, v) in &fields {
            body.push_str(&format!(",\"{k}\":{v}"));
        }
        body.push('}');
        let (_, peak) = peak_of(|| decode_request(body.as_bytes()));
        prop_assert!(peak <= bound(body.len()));
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Random byte streams on many connections to a live service (in this
/// process, so that a panic on any of its threads is seen): it answers
/// each with replies or an error, or drops it; afterwards it still
/// answers, its registered writer is still the one, and none of its
/// threads panicked.
#[test]
fn live_service_survives_random_streams() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let root = tempfile::tempdir().unwrap();
    let _service = tape_service::Service::start(root.path()).unwrap();
    let journals = root.path().join("journal");
    let _writer = tape_service::WriterLease::acquire(root.path(), &journals, "md").unwrap();
    let socket = tape_service::socket_path(root.path());
    let frame = |body: &[u8]| {
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let hello = frame(br#"{"type":"hello","version":1}"#);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let stream = (
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                "\\{\"type\":\"(register_writer|register_reader|add_journal|find|list|count|journals|hello)\"(,\"[a-z_]{1,8}\":(\"[ -~]{0,20}\"|[0-9]{1,25}|null|\\[\\]|\\{\\}))*\\}"
                    .prop_map(|s| frame(s.as_bytes())),
            ],
            1..6,
        ),
    );
    runner
        .run(&stream, |(greet, parts)| {
            let mut s = UnixStream::connect(&socket).expect("connect");
            s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let mut wire = if greet { hello.clone() } else { Vec::new() };
            for p in &parts {
                wire.extend_from_slice(p);
            }
            // The service may close early: a failed write is allowed.
            let _ = s.write_all(&wire);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            // Whatever came back is well-formed frames of JSON objects.
            let mut rest = &got[..];
            while rest.len() >= 4 {
                let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                prop_assert!(rest.len() >= 4 + n, "a cut reply");
                let v: serde_json::Value = serde_json::from_slice(&rest[4..4 + n]).unwrap();
                prop_assert!(v["type"].is_string(), "{v}");
                rest = &rest[4 + n..];
            }
            prop_assert!(rest.is_empty());
            Ok(())
        })
        .unwrap();
    let mut c = tape_service::Client::connect(root.path()).expect("the service still answers");
    let md = c
        .find("md")
        .unwrap()
        .expect("the writer is still registered");
    assert_eq!(md.pid, std::process::id());
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a service thread panicked"
    );
}
