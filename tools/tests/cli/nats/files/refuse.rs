//! What is not what was sent is refused, naming it, and writes nothing: a
//! damaged chunk, a missing one, a wrong token.

use super::*;
use crate::common::*;
use crate::nats::engine::*;
use base64::Engine as _;
use std::path::PathBuf;

/// The NATS headers of a raw `MSG.GET` answer (`NATS/1.0\r\nK: V\r\n...`).
fn headers_of(msg: &serde_json::Value) -> Vec<(String, String)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let raw = b64
        .decode(msg["hdrs"].as_str().unwrap_or_default())
        .unwrap();
    String::from_utf8(raw)
        .unwrap()
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn a_damaged_chunk_is_refused_naming_it_and_the_file_at_the_target_stays_as_it_was() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), None);
    let url = engine.url();
    let src = a.path().join("d.bin");
    random_file(&src, MIB);
    ok(&mut file(&url, &["send", src.to_str().unwrap()]), b"");
    let nuid = listing(&url)[0]["nuid"].as_str().unwrap().to_string();
    let subject = format!("$O.tape.C.{nuid}");
    assert_eq!(held(engine.port, &subject), 8);

    // Chunks 3 to 7 taken out and put back in order, chunk 3 with one
    // byte changed and its headers (index, digest) as they were.
    let info = js_api(engine.port, "$JS.API.STREAM.INFO.OBJ_tape", "");
    let last = info["state"]["last_seq"].as_u64().unwrap();
    let mut chunks = Vec::new();
    for seq in 1..=last {
        let m = js_api(
            engine.port,
            "$JS.API.STREAM.MSG.GET.OBJ_tape",
            &format!("{{\"seq\":{seq}}}"),
        );
        if m["message"]["subject"] == subject.as_str() {
            chunks.push((seq, m["message"].clone()));
        }
    }
    assert_eq!(chunks.len(), 8);
    let mut raw = Raw::connect(engine.port, None).unwrap();
    for (i, (seq, m)) in chunks.iter().enumerate().skip(3) {
        let del = js_api(
            engine.port,
            "$JS.API.STREAM.MSG.DELETE.OBJ_tape",
            &format!("{{\"seq\":{seq}}}"),
        );
        assert_eq!(del["success"], true, "{del}");
        let h = headers_of(m);
        assert!(h.contains(&("Tape-Chunk".into(), i.to_string())), "{h:?}");
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut body = base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().unwrap())
            .unwrap();
        if i == 3 {
            body[1000] ^= 0x5a;
        }
        raw.publish(&subject, &h, &body);
    }
    wait_until("the chunks to be put back", || {
        held(engine.port, &subject) == 8
    });

    let dst = b.path().join("d.bin");
    std::fs::write(&dst, b"the file that was there").unwrap();
    let (code, _, err) = outcome(&url, &["recv", "d.bin", "-o", b.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].contains("chunk 3 of file d.bin is damaged"),
        "{}",
        err[0]
    );
    assert!(err[0].contains("nothing written at"), "{}", err[0]);
    assert_eq!(std::fs::read(&dst).unwrap(), b"the file that was there");
    assert_eq!(names_in(b.path()), ["d.bin"], "no temporary file left");

    // A chunk gone: refused before anything is written.
    let damaged = js_api(
        engine.port,
        "$JS.API.STREAM.MSG.GET.OBJ_tape",
        &serde_json::json!({ "last_by_subj": subject }).to_string(),
    )["message"]["seq"]
        .as_u64()
        .unwrap();
    let seq3 = damaged - 4;
    let del = js_api(
        engine.port,
        "$JS.API.STREAM.MSG.DELETE.OBJ_tape",
        &format!("{{\"seq\":{seq3}}}"),
    );
    assert_eq!(del["success"], true, "{del}");
    let (code, _, err) = outcome(&url, &["recv", "d.bin", "-o", b.path().to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "one line: {err:?}");
    assert!(
        err[0].contains("file d.bin is incomplete on the server: it holds 7 of its 8 chunks"),
        "{}",
        err[0]
    );
    assert_eq!(std::fs::read(&dst).unwrap(), b"the file that was there");
    assert_eq!(names_in(b.path()), ["d.bin"]);
}

#[test]
fn a_wrong_token_is_one_line_naming_the_server_and_nothing_is_written() {
    let a = Root::new();
    let b = Root::new();
    let engine = Engine::start(a.path(), Some("right-token-3"));
    let url = engine.url();
    let src = a.path().join("f.bin");
    let sha = random_file(&src, 3 * MIB);
    let token = |t: &str| -> PathBuf {
        let p = a.path().join(format!("token-{}", t.len()));
        std::fs::write(&p, format!("{t}\n")).unwrap();
        p
    };
    let wrong = token("wrong-token");
    let wrong = wrong.to_str().unwrap();
    let out = b.path().to_str().unwrap();
    for args in [
        vec!["send", src.to_str().unwrap()],
        vec!["recv", "f.bin", "-o", out],
        vec!["ls"],
        vec!["rm", "f.bin"],
    ] {
        let mut args = args.clone();
        args.extend(["--token-file", wrong]);
        let (code, stdout, err) = outcome(&url, &args);
        assert_eq!(code, Some(1), "{args:?}: {err:?}");
        assert_eq!(err.len(), 1, "{args:?}: one line: {err:?}");
        assert!(err[0].contains(&url), "names the server: {}", err[0]);
        assert!(err[0].contains("refused the credentials"), "{}", err[0]);
        assert_eq!(stdout, "");
    }
    let streams = js_api_as(
        engine.port,
        Some("right-token-3"),
        "$JS.API.STREAM.NAMES",
        "",
    );
    assert_eq!(
        streams["total"].as_u64(),
        Some(0),
        "no bucket made: {streams}"
    );
    assert_eq!(names_in(b.path()), Vec::<String>::new(), "nothing written");

    // The right token works; a name that is not there exits 3.
    let right = token("right-token-3");
    let right = right.to_str().unwrap();
    let s = src.to_str().unwrap();
    ok(&mut file(&url, &["send", s, "--token-file", right]), b"");
    ok(
        &mut file(&url, &["recv", "f.bin", "-o", out, "--token-file", right]),
        b"",
    );
    assert_eq!(sha_of(&b.path().join("f.bin")), sha);
    let (code, _, err) = outcome(&url, &["recv", "nope", "-o", out, "--token-file", right]);
    assert_eq!(code, Some(3), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    ok(
        &mut file(&url, &["rm", "f.bin", "--token-file", right]),
        b"",
    );
    let (code, _, err) = outcome(&url, &["rm", "f.bin", "--token-file", right]);
    assert_eq!(code, Some(3), "removed: {err:?}");
    assert_eq!(names_in(b.path()), ["f.bin"]);
}
