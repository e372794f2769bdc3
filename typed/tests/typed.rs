//! Typed messages on real journals: round trips of a zero-copy struct and
//! of a serde enum with nested fields, a frame of one type read as
//! another refused, and (proptest) truncated and random payloads giving
//! errors, never a panic, with what a decode allocates bounded.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use tape_journal::{AppendOptions, Appender, Cursor, CursorOptions, Start};
use tape_testkit::alloc::peak_of;
use tape_typed::{
    DecodeError, PlainMessage, SerdeMessage, TypedAppend, TypedFrame, ViewError, PAYLOAD_ALIGN,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

#[global_allocator]
static ALLOC: tape_testkit::alloc::Counting = tape_testkit::alloc::Counting;

/// 64 bytes, as a market-data tick might be.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Tick {
    sym: [u8; 8],
    px: i64,
    qty: i64,
    bid: i64,
    ask: i64,
    exch_ns: i64,
    venue: u32,
    flags: u32,
    level: u64,
}
impl PlainMessage for Tick {
    const TYPE: u32 = 1;
}
const _: () = assert!(std::mem::size_of::<Tick>() == 64);

/// Another plain type (other id).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Heartbeat {
    n: u64,
}
impl PlainMessage for Heartbeat {
    const TYPE: u32 = 2;
}

/// Tick's id with another layout: what a reader built against an older
/// struct would hold.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug)]
#[repr(C)]
struct OldTick {
    sym: [u8; 8],
    px: i64,
}
impl PlainMessage for OldTick {
    const TYPE: u32 = 1;
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Side {
    Buy,
    Sell,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Order {
    id: u64,
    sym: String,
    side: Side,
    px: i64,
    qty: u32,
    tags: Vec<String>,
    parent: Option<Box<Order>>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Msg {
    New(Order),
    Cancel { id: u64, reason: Option<String> },
    Batch(Vec<Order>),
    Config(BTreeMap<String, Vec<i32>>),
    Ping,
}
impl SerdeMessage for Msg {
    const TYPE: u32 = 10;
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Fill {
    id: u64,
    qty: u32,
}
impl SerdeMessage for Fill {
    const TYPE: u32 = 11;
}

/// A string alone, for the allocation bound.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Text(String);
impl SerdeMessage for Text {
    const TYPE: u32 = 12;
}

/// 16 bytes claimed a payload byte: bincode's limit must let it through.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Wide(Vec<u128>);
impl SerdeMessage for Wide {
    const TYPE: u32 = 14;
}

/// Elements that encode to nothing.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Units(Vec<()>);
impl SerdeMessage for Units {
    const TYPE: u32 = 17;
}

/// A sequence alone, for the allocation bound.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Numbers(Vec<u64>);
impl SerdeMessage for Numbers {
    const TYPE: u32 = 13;
}

fn journal() -> (tempfile::TempDir, Appender, Cursor) {
    let dir = tempfile::tempdir().unwrap();
    let opts = AppendOptions {
        page_size: 1 << 20,
        ..AppendOptions::default()
    };
    let app = Appender::create(dir.path(), "t", opts).unwrap();
    let cur = Cursor::open(dir.path(), "t", Start::First, CursorOptions::default()).unwrap();
    (dir, app, cur)
}

fn tick(i: i64) -> Tick {
    Tick {
        sym: *b"ESZ6\0\0\0\0",
        px: 500_000 + i,
        qty: i,
        bid: 499_975 + i,
        ask: 500_025 + i,
        exch_ns: 1_700_000_000_000_000_000 + i,
        venue: 3,
        flags: 0x8000_0001,
        level: i as u64 % 10,
    }
}

fn order(id: u64) -> Order {
    Order {
        id,
        sym: "ESZ6".into(),
        side: if id % 2 == 0 { Side::Buy } else { Side::Sell },
        px: -500_025,
        qty: 10,
        tags: vec!["algo=twap".into(), "desk=7".into()],
        parent: Some(Box::new(Order {
            id: id * 100,
            sym: "ES".into(),
            side: Side::Buy,
            px: i64::MIN,
            qty: u32::MAX,
            tags: vec![],
            parent: None,
        })),
    }
}

#[test]
fn a_plain_struct_round_trips_and_is_read_in_place() {
    let (_dir, mut app, mut cur) = journal();
    assert_eq!(app.write_plain(&tick(1)).unwrap(), 1);
    let mut claim = app.claim_plain::<Tick>().unwrap();
    assert_eq!(*claim, Tick::new_zeroed(), "a claim starts zeroed");
    *claim = tick(2);
    claim.qty = 42;
    assert_eq!(claim.commit(), 2);
    // Dropped without commit: nothing published.
    let mut dropped = app.claim_plain::<Tick>().unwrap();
    dropped.px = 7;
    drop(dropped);
    assert_eq!(
        app.claim_plain::<Heartbeat>().unwrap().commit_to(5, 6, 7),
        3
    );

    let f = cur.next().unwrap().unwrap();
    assert_eq!(f.msg_type(), Tick::TYPE);
    let t: &Tick = f.view().unwrap();
    assert_eq!(*t, tick(1));
    // The &Tick is the payload in the mapping itself, 8-byte aligned.
    assert_eq!(t as *const Tick as *const u8, f.payload().as_ptr());
    assert_eq!(f.payload().as_ptr() as usize % PAYLOAD_ALIGN, 0);
    let f = cur.next().unwrap().unwrap();
    assert_eq!(*f.view::<Tick>().unwrap(), Tick { qty: 42, ..tick(2) });
    let f = cur.next().unwrap().unwrap();
    assert_eq!(f.seq(), 3);
    assert_eq!((f.source(), f.dest(), f.corr()), (5, 6, 7));
    assert_eq!(f.view::<Heartbeat>().unwrap().n, 0);
    assert!(f.checksum_ok());
    assert!(cur.next().unwrap().is_none());
}

#[test]
fn a_serde_enum_with_nested_fields_round_trips() {
    let (_dir, mut app, mut cur) = journal();
    let mut config = BTreeMap::new();
    config.insert("limits".to_string(), vec![1, -2, i32::MAX, i32::MIN]);
    config.insert("empty".to_string(), vec![]);
    let msgs = vec![
        Msg::New(order(1)),
        Msg::Cancel {
            id: 9,
            reason: Some("too late ✓".into()),
        },
        Msg::Cancel {
            id: 10,
            reason: None,
        },
        Msg::Batch(vec![order(2), order(3), order(4)]),
        Msg::Config(config),
        Msg::Ping,
    ];
    for m in &msgs {
        app.write_serde(m).unwrap();
    }
    // The densest claims (16 bytes of u128 a payload byte) at each of the
    // limit's steps: never refused.
    let wide: Vec<Wide> = [15, 16, 255, 4095, 70_000]
        .iter()
        .map(|&n| Wide(vec![0; n]))
        .collect();
    for w in &wide {
        app.write_serde(w).unwrap();
    }
    for (i, m) in msgs.iter().enumerate() {
        let f = cur.next().unwrap().unwrap();
        assert_eq!(f.seq(), i as u64 + 1);
        assert_eq!(f.msg_type(), Msg::TYPE);
        assert!(f.checksum_ok());
        assert_eq!(&f.decode::<Msg>().unwrap(), m);
        // The payload is bincode 2's standard encoding, nothing else.
        let (direct, _): (Msg, usize) =
            bincode::serde::decode_from_slice(f.payload(), bincode::config::standard()).unwrap();
        assert_eq!(&direct, m);
    }
    for w in &wide {
        assert_eq!(&cur.next().unwrap().unwrap().decode::<Wide>().unwrap(), w);
    }
    assert!(cur.next().unwrap().is_none());
}

#[test]
fn a_frame_of_one_type_read_as_another_is_refused() {
    let (_dir, mut app, mut cur) = journal();
    app.write_plain(&tick(1)).unwrap();
    app.write_serde(&Fill { id: 1, qty: 2 }).unwrap();
    app.write(Heartbeat::TYPE, &[0u8; 16]).unwrap();

    let f = cur.next().unwrap().unwrap();
    assert!(matches!(
        f.view::<Heartbeat>(),
        Err(ViewError::WrongType {
            expected: 2,
            found: 1,
            ..
        })
    ));
    let e = f.decode::<Msg>().unwrap_err();
    assert!(
        matches!(
            e,
            DecodeError::WrongType {
                expected: 10,
                found: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("is not a"), "{e}");
    // Same id, another layout: the length says so.
    let e = f.view::<OldTick>().unwrap_err();
    assert_eq!(
        e,
        ViewError::WrongLength {
            type_name: std::any::type_name::<OldTick>(),
            expected: 16,
            found: 64
        }
    );
    assert!(
        e.to_string()
            .contains("16 bytes but the frame's payload is 64"),
        "{e}"
    );

    let f = cur.next().unwrap().unwrap();
    assert!(matches!(
        f.decode::<Msg>(),
        Err(DecodeError::WrongType { found: 11, .. })
    ));
    assert!(matches!(
        f.view::<Tick>(),
        Err(ViewError::WrongType { found: 11, .. })
    ));
    assert_eq!(f.decode::<Fill>().unwrap(), Fill { id: 1, qty: 2 });

    // A Heartbeat frame of 16 bytes: the right type, the wrong length.
    let f = cur.next().unwrap().unwrap();
    assert!(matches!(
        f.view::<Heartbeat>(),
        Err(ViewError::WrongLength {
            expected: 8,
            found: 16,
            ..
        })
    ));
}

/// The payload of `bytes` written as a frame of type `ty`, read back.
struct Frames {
    _dir: tempfile::TempDir,
    app: Appender,
    cur: Cursor,
}

impl Frames {
    fn new() -> RefCell<Frames> {
        let (_dir, app, cur) = journal();
        RefCell::new(Frames { _dir, app, cur })
    }

    /// Writes `bytes` as a frame of type `ty` and runs `f` on it.
    fn with<R>(
        &mut self,
        ty: u32,
        bytes: &[u8],
        f: impl FnOnce(tape_journal::Frame<'_>) -> R,
    ) -> R {
        self.app.write(ty, bytes).unwrap();
        f(self.cur.next().unwrap().unwrap())
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn arb_order() -> impl Strategy<Value = Order> {
    (
        any::<u64>(),
        "[a-zA-Z0-9]{0,12}",
        any::<bool>(),
        any::<i64>(),
        any::<u32>(),
        proptest::collection::vec("[ -~é✓]{0,20}", 0..4),
        proptest::option::of((any::<u64>(), "[A-Z]{0,4}")),
    )
        .prop_map(|(id, sym, buy, px, qty, tags, parent)| Order {
            id,
            sym,
            side: if buy { Side::Buy } else { Side::Sell },
            px,
            qty,
            tags,
            parent: parent.map(|(id, sym)| {
                Box::new(Order {
                    id,
                    sym,
                    side: Side::Sell,
                    px: 0,
                    qty: 0,
                    tags: vec![],
                    parent: None,
                })
            }),
        })
}

fn arb_msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        arb_order().prop_map(Msg::New),
        (any::<u64>(), proptest::option::of(".{0,30}"))
            .prop_map(|(id, reason)| Msg::Cancel { id, reason }),
        proptest::collection::vec(arb_order(), 0..4).prop_map(Msg::Batch),
        proptest::collection::btree_map(
            "[a-z]{0,8}",
            proptest::collection::vec(any::<i32>(), 0..6),
            0..4
        )
        .prop_map(Msg::Config),
        Just(Msg::Ping),
    ]
}

#[test]
fn proptest_messages_round_trip_and_every_truncation_is_an_error() {
    let frames = Frames::new();
    runner(256)
        .run(&arb_msg(), |m| {
            let mut fr = frames.borrow_mut();
            let bytes = bincode::serde::encode_to_vec(&m, bincode::config::standard()).unwrap();
            fr.app.write_serde(&m).unwrap();
            let f = fr.cur.next().unwrap().unwrap();
            prop_assert_eq!(f.payload(), &bytes[..]);
            prop_assert_eq!(f.decode::<Msg>().unwrap(), m);
            for cut in 0..bytes.len() {
                let r = fr.with(Msg::TYPE, &bytes[..cut], |f| f.decode::<Msg>());
                prop_assert!(
                    matches!(
                        r,
                        Err(DecodeError::Truncated { .. } | DecodeError::TooLong { .. })
                    ),
                    "cut at {}: {:?}",
                    cut,
                    r
                );
            }
            // One byte too many: left over, named.
            let mut longer = bytes.clone();
            longer.push(0);
            let r = fr.with(Msg::TYPE, &longer, |f| f.decode::<Msg>());
            prop_assert!(
                matches!(r, Err(DecodeError::TrailingBytes { used, len, .. }) if used == bytes.len() && len == longer.len()),
                "{:?}",
                r
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn proptest_random_payloads_give_errors_never_a_panic() {
    let frames = Frames::new();
    let payload = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // Length prefixes that claim a lot: 251..=253 start a u16, u32 or
        // u64 in bincode's varint.
        (
            0u8..8,
            251u8..=253,
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(tag, big, rest)| {
                let mut v = vec![tag, big];
                v.extend(std::iter::repeat_n(0xFF, 8));
                v.extend(rest);
                v
            }),
    ];
    runner(2048)
        .run(&payload, |bytes| {
            let mut fr = frames.borrow_mut();
            fr.with(Msg::TYPE, &bytes, |f| {
                let (r, peak) = peak_of(|| f.decode::<Msg>().map(drop));
                // A lying prefix gets at most bincode's limit (at most 256
                // x the payload) for a string, and room for one element a
                // payload byte for a sequence (an Order is ~100 bytes).
                prop_assert!(peak <= 64 * 1024, "{} bytes allocated: {:?}", peak, r);
                if let Err(e) = r {
                    prop_assert!(!e.to_string().is_empty());
                }
                Ok(())
            })?;
            fr.with(Tick::TYPE, &bytes, |f| {
                let r = f.view::<Tick>();
                prop_assert_eq!(r.is_ok(), bytes.len() == 64);
                Ok(())
            })?;
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_lying_length_allocates_a_bounded_amount() {
    let frames = Frames::new();
    let mut fr = frames.borrow_mut();
    // A String claiming 2^64-1 bytes in a 9-byte payload.
    let mut huge = vec![253u8];
    huge.extend([0xFF; 8]);
    let (r, peak) = fr.with(Text::TYPE, &huge, |f| peak_of(|| f.decode::<Text>()));
    assert!(
        matches!(r, Err(DecodeError::TooLong { len: 9, .. })),
        "{r:?}"
    );
    assert!(peak < 1024, "{peak} bytes allocated for a 9-byte payload");
    // A String claiming 200 bytes in a 3-byte payload: within the limit
    // (256 B), refused as truncated.
    let (r, peak) = fr.with(Text::TYPE, &[200, b'a', b'b'], |f| {
        peak_of(|| f.decode::<Text>())
    });
    assert!(
        matches!(r, Err(DecodeError::Truncated { len: 3, .. })),
        "{r:?}"
    );
    assert!(peak <= 256, "{peak}");
    // A Vec<u64> claiming 2^32 elements in 5 bytes: room for at most 5
    // elements is preallocated (serde alone would take 1 MiB).
    let mut seq = vec![252u8];
    seq.extend([0xFF; 4]);
    let (r, peak) = fr.with(Numbers::TYPE, &seq, |f| peak_of(|| f.decode::<Numbers>()));
    assert!(matches!(r, Err(DecodeError::Truncated { .. })), "{r:?}");
    assert!(peak <= 5 * 8, "{peak}");
    // Zero-sized elements take no payload: more of them than bytes is
    // valid, and decodes.
    let units = vec![(); 1000];
    fr.app.write_serde(&Units(units.clone())).unwrap();
    let f = fr.cur.next().unwrap().unwrap();
    assert_eq!(f.payload().len(), 3);
    assert_eq!(f.decode::<Units>().unwrap(), Units(units));
    // Malformed: a bad enum tag, a bad UTF-8 string.
    let r = fr.with(Msg::TYPE, &[9], |f| f.decode::<Msg>());
    assert!(matches!(r, Err(DecodeError::Malformed { .. })), "{r:?}");
    let r = fr.with(Text::TYPE, &[2, 0xC3, 0x28], |f| f.decode::<Text>());
    let e = r.unwrap_err();
    assert!(matches!(e, DecodeError::Malformed { .. }), "{e:?}");
    assert!(e.to_string().contains("not a valid"), "{e}");
}

/// Encodes to one more byte each time it is serialized.
#[derive(Deserialize, Debug)]
struct Flaky(std::cell::Cell<u8>);
impl Serialize for Flaky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.get();
        self.0.set(n + 1);
        vec![0u8; n as usize].serialize(s)
    }
}
impl SerdeMessage for Flaky {
    const TYPE: u32 = 15;
}

/// A sequence of unknown length, which bincode cannot encode.
#[derive(Deserialize, Debug)]
struct Unsized(Vec<u8>);
impl Serialize for Unsized {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(None)?;
        for b in &self.0 {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
}
impl SerdeMessage for Unsized {
    const TYPE: u32 = 16;
}

#[test]
fn a_message_that_cannot_be_encoded_publishes_nothing() {
    let (_dir, mut app, mut cur) = journal();
    let e = app
        .write_serde(&Flaky(std::cell::Cell::new(3)))
        .unwrap_err();
    assert!(
        matches!(e, tape_typed::SerdeWriteError::Unstable { measured: 4 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("nothing was written"), "{e}");
    let e = app.write_serde(&Unsized(vec![1, 2])).unwrap_err();
    assert!(matches!(e, tape_typed::SerdeWriteError::Encode(_)), "{e:?}");
    assert!(
        e.to_string().starts_with("cannot encode the message"),
        "{e}"
    );
    assert!(cur.next().unwrap().is_none());
    // The journal goes on at seq 1, its bytes past the tail still zero.
    assert_eq!(app.write_serde(&Fill { id: 1, qty: 1 }).unwrap(), 1);
    let f = cur.next().unwrap().unwrap();
    assert_eq!(f.decode::<Fill>().unwrap(), Fill { id: 1, qty: 1 });
    assert!(cur.next().unwrap().is_none());
    drop(app);
    assert!(tape_journal::verify(_dir.path(), "t").is_ok());
}
