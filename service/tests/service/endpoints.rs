//! Endpoints (rpc names): register, find, watchers see them up and down.

use super::*;
use crate::wire::run_protocol_script;

#[test]
fn endpoints_register_find_and_watchers_see_up_and_down() {
    use tape_service::{Change, EndpointRole, JournalId, PeerKind};
    let _w = watchdog("endpoints_watch");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let dir = std::fs::canonicalize(root.path()).unwrap().join("journal");
    let jid = |j: &str| JournalId {
        dir: dir.clone(),
        journal: j.into(),
    };

    // A watcher before anything registers: the list is empty.
    let (now, mut watch) = Client::connect(root.path()).unwrap().watch().unwrap();
    assert!(now.is_empty());

    // A responder over the raw wire, as PROTOCOL.md shows it.
    let mut s = raw(root.path());
    hello(&mut s);
    send_json(
        &mut s,
        &format!(
            r#"{{"type":"register_endpoint","name":"echo","role":"responder","dir":"{}","journal":"rpc.echo"}}"#,
            dir.display()
        ),
    );
    let id = match recv(&mut s) {
        Some(Reply::Registered { id }) => id,
        other => panic!("expected registered, got {other:?}"),
    };
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!(
        (change, peer.id, peer.kind),
        (Change::Up, id, PeerKind::Responder)
    );
    assert_eq!(peer.name, "echo");
    assert_eq!(peer.pid, std::process::id());
    assert_eq!(peer.journals, [jid("rpc.echo")]);

    // The name is taken; the journal is held as by a writer.
    let mut c = Client::connect(root.path()).unwrap();
    assert_eq!(
        c.register_endpoint("echo", EndpointRole::Requester, &jid("other"))
            .unwrap(),
        Err(std::process::id())
    );
    assert!(matches!(
        WriterLease::acquire(root.path(), &journal_dir(root.path()), "rpc.echo"),
        Err(RegisterError::Held { .. })
    ));

    // A requester on a Client; find_endpoint tells endpoints from readers.
    let mut req = Client::connect(root.path()).unwrap();
    let rid = req
        .register_endpoint("client", EndpointRole::Requester, &jid("rpc.client"))
        .unwrap()
        .unwrap();
    let _reader = ReaderLease::acquire(root.path(), "lookalike", &[]).unwrap();
    let mut q = Client::connect(root.path()).unwrap();
    assert_eq!(q.find_endpoint("client").unwrap().unwrap().id, rid);
    assert!(q.find_endpoint("lookalike").unwrap().is_none());
    assert_eq!(q.find("lookalike").unwrap().unwrap().kind, PeerKind::Reader);
    assert_eq!(q.count().unwrap(), 3);
    let md = q.journals().unwrap();
    let echo = md.iter().find(|j| j.journal == "rpc.echo").unwrap();
    assert_eq!(
        echo.writer.as_ref().unwrap().id,
        id,
        "an endpoint writes its journal"
    );
    assert!(echo.readers.is_empty());
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.id), (Change::Up, rid));

    // A second watcher starts from the list of both, in registration order.
    let (now, mut watch2) = Client::connect(root.path()).unwrap().watch().unwrap();
    assert_eq!(now.iter().map(|p| p.id).collect::<Vec<_>>(), [id, rid]);

    // Closing the responder's connection: both watchers see it go, at once
    // and in order; the name and the journal are free again.
    drop(s);
    for w in [&mut watch, &mut watch2] {
        let (change, peer) = w.next_event().unwrap();
        assert_eq!((change, peer.id), (Change::Down, id));
    }
    assert!(q.find_endpoint("echo").unwrap().is_none());
    let mut again = Client::connect(root.path()).unwrap();
    assert!(again
        .register_endpoint("echo", EndpointRole::Responder, &jid("rpc.echo"))
        .unwrap()
        .is_ok());
    let (change, peer) = watch2.next_event().unwrap();
    assert_eq!((change, peer.name.as_str()), (Change::Up, "echo"));

    // The watching connection may still ask questions: replies come in
    // order among the events.
    let mut ws = raw(root.path());
    hello(&mut ws);
    send_json(&mut ws, r#"{"type":"watch"}"#);
    assert!(matches!(recv(&mut ws), Some(Reply::Watching { endpoints }) if endpoints.len() == 2));
    send_json(&mut ws, r#"{"type":"watch"}"#);
    assert!(matches!(
        recv(&mut ws),
        Some(Reply::Error {
            code: ErrorCode::Invalid,
            ..
        })
    ));
    send_json(&mut ws, r#"{"type":"count"}"#);
    assert!(matches!(recv(&mut ws), Some(Reply::Count { count: 3 })));
    drop(req);
    assert!(matches!(
        recv(&mut ws),
        Some(Reply::Event {
            change: Change::Down,
            ..
        })
    ));
}

#[test]
fn killed_endpoint_goes_down_for_watchers() {
    use tape_service::Change;
    let _w = watchdog("killed_endpoint");
    let root = tempfile::tempdir().unwrap();
    let _svc = Service::start(root.path()).unwrap();
    let (_, mut watch) = Client::connect(root.path()).unwrap().watch().unwrap();
    let child = RoleChild::spawn("endpoint", root.path());
    let pid = child.pid();
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.pid), (Change::Up, pid));
    child.kill9();
    let (change, peer) = watch.next_event().unwrap();
    assert_eq!((change, peer.pid), (Change::Down, pid));
}

#[test]
fn python_endpoints_from_protocol_md() {
    let _w = watchdog("python_endpoints");
    run_protocol_script("protocol_endpoints.py");
}
