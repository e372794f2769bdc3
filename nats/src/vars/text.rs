//! What the server hands back, read: values, raw headers, time stamps,
//! delivery subjects; and the ids operations carry.

use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

/// A value read back: JSON, or (written by something else than tape) the
/// bytes as a JSON string.
pub(crate) fn parse_value(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// The operation named in raw NATS headers (`NATS/1.0\r\nKV-Operation:
/// DEL\r\n...`): `put` when none.
pub(crate) fn op_of_raw_headers(h: &[u8]) -> String {
    let s = String::from_utf8_lossy(h);
    for line in s.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("KV-Operation") {
                return v.trim().to_ascii_lowercase();
            }
        }
    }
    "put".into()
}

/// Stream seq, consumer seq, time (ns) and pending from a delivery's reply
/// subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`,
/// or with domain and account hash on 2.10+).
pub(crate) fn delivery(reply: &str) -> Option<(u64, u64, i64, u64)> {
    let t: Vec<&str> = reply.split('.').collect();
    if t.len() < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let o = if t.len() == 9 { 5 } else { 7 };
    Some((
        t[o].parse().ok()?,
        t[o + 1].parse().ok()?,
        t[o + 2].parse().ok()?,
        t[o + 3].parse().ok()?,
    ))
}

/// A unique id (time, pid, counter and a random part).
pub(crate) fn nuid() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = tape_journal::clock::now_ns();
    let mut r = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut r));
    format!(
        "{t:x}{:x}{n:x}{:x}",
        std::process::id(),
        u64::from_le_bytes(r)
    )
}

/// `2024-01-02T03:04:05.123456789Z` (or with an offset) → ns since the
/// epoch.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 9 {
                frac = frac * 10 + i64::from(b[i] - b'0');
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..9 {
            frac *= 10;
        }
    }
    let off = match b.get(i) {
        Some(b'Z') => 0,
        Some(&c) if c == b'+' || c == b'-' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = (oh * 60 + om) * 60;
            if c == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - off;
    Some(secs * 1_000_000_000 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-01T12:34:56.123456789Z"),
            Some(1_709_296_496_123_456_789)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T13:34:56.5+01:00"),
            Some(1_709_296_496_500_000_000)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn values_read_back() {
        assert_eq!(parse_value(b"[1,2]"), serde_json::json!([1, 2]));
        assert_eq!(parse_value(b"not json"), serde_json::json!("not json"));
    }

    #[test]
    fn raw_headers() {
        assert_eq!(
            op_of_raw_headers(b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n"),
            "del"
        );
        assert_eq!(op_of_raw_headers(b""), "put");
        assert_eq!(
            delivery("$JS.ACK.KV_tape.c.1.42.7.1700000000000000000.3"),
            Some((42, 7, 1_700_000_000_000_000_000, 3))
        );
    }
}
