//! The object store's layout on the server: stream, subjects, the object's
//! meta record (the JSON NATS's own object stores read and write), names,
//! digests.

use super::FileError;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The bucket without `--bucket`.
pub const DEFAULT_BUCKET: &str = "tape";
/// Bytes per chunk when sending (NATS's object stores use the same).
pub const DEFAULT_CHUNK_SIZE: usize = 128 * 1024;
/// Largest chunk size accepted (the server's default maximum payload is
/// 1 MiB, and a chunk is one message).
pub const MAX_CHUNK_SIZE: usize = 1 << 20;
/// Header of each chunk tape sends: its index in the object, from 0.
pub const CHUNK_INDEX_HEADER: &str = "Tape-Chunk";
/// Header of each chunk tape sends: `SHA-256=<base64url>` of its bytes.
pub const CHUNK_DIGEST_HEADER: &str = "Tape-Chunk-Digest";
/// The meta record's `metadata` key saying every chunk carries
/// [`CHUNK_INDEX_HEADER`] and [`CHUNK_DIGEST_HEADER`].
pub const CHUNK_DIGESTS_KEY: &str = "tape-chunk-digests";

/// The stream of bucket `b`.
pub fn stream_of(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// The subject of the chunks of one object version.
pub fn chunk_subject(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// The subject of an object's meta record: the name in base64url (with
/// padding), as NATS's object stores encode it.
pub fn meta_subject(bucket: &str, name: &str) -> String {
    format!(
        "$O.{bucket}.M.{}",
        base64::engine::general_purpose::URL_SAFE.encode(name)
    )
}

/// Every meta subject of bucket `b`.
pub fn meta_wildcard(bucket: &str) -> String {
    format!("$O.{bucket}.M.>")
}

/// Every chunk subject of bucket `b`.
pub fn chunk_wildcard(bucket: &str) -> String {
    format!("$O.{bucket}.C.>")
}

/// Checks a bucket name: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn check_bucket(b: &str) -> Result<(), FileError> {
    if b.is_empty()
        || b.len() > 64
        || !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
    {
        return Err(FileError::Other(format!(
            "the bucket name {b:?} is not usable: give 1 to 64 of A-Z a-z 0-9 _ -"
        )));
    }
    Ok(())
}

/// Checks an object name: 1 to 255 bytes of UTF-8 without control
/// characters (any other character is fine: the subject holds it in
/// base64).
pub fn check_name(n: &str) -> Result<(), FileError> {
    if n.is_empty() || n.len() > 255 || n.chars().any(char::is_control) {
        return Err(FileError::Other(format!(
            "the file name {n:?} is not usable: give 1 to 255 bytes without control characters"
        )));
    }
    Ok(())
}

/// The file name a received object gets without `-o`: its name's last
/// `/`-separated part.
pub fn local_name(name: &str) -> Result<&str, FileError> {
    let base = name.rsplit('/').next().unwrap_or(name);
    if base.is_empty() || base == "." || base == ".." {
        return Err(FileError::Other(format!(
            "the name {name:?} gives no file name to write: give -o PATH"
        )));
    }
    Ok(base)
}

/// `SHA-256=<base64url with padding>`: how NATS's object stores write a
/// digest.
pub fn digest_text(d: &[u8]) -> String {
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(d)
    )
}

/// The SHA-256 of `b` as [`digest_text`] writes it.
pub fn digest_of(b: &[u8]) -> String {
    digest_text(&Sha256::digest(b))
}

/// The 32 bytes of a `SHA-256=...` digest, if it is one.
pub fn digest_bytes(s: &str) -> Option<Vec<u8>> {
    let b64 = s.strip_prefix("SHA-256=")?;
    let engines = [
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::STANDARD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(b64).ok())
        .filter(|d| d.len() == 32)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An object as its meta record describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// Its name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// How many chunks hold it.
    pub chunks: u64,
    /// The largest chunk's size, as the sender set it (0: not said).
    pub chunk_size: u64,
    /// The SHA-256 of the whole object, lower-case hex ("" when the
    /// record has none).
    pub sha256: String,
    /// When it was sent (RFC 3339, as the record has it).
    pub modified: String,
    /// The id of this version: its chunks are on `$O.<bucket>.C.<nuid>`.
    pub nuid: String,
    /// Every chunk carries its index and digest (sent by tape).
    pub chunk_digests: bool,
    /// The record is a deletion.
    pub deleted: bool,
    /// The stream sequence of the record (its revision).
    #[serde(skip)]
    pub revision: u64,
}

impl ObjectInfo {
    /// Reads a meta record; `None` when it is not one.
    pub fn from_record(v: &Value, revision: u64) -> Option<ObjectInfo> {
        let name = v["name"].as_str()?.to_string();
        let u = |x: &Value| x.as_u64().unwrap_or(0);
        let sha256 = v["digest"]
            .as_str()
            .and_then(digest_bytes)
            .map(|d| hex(&d))
            .unwrap_or_default();
        Some(ObjectInfo {
            name,
            size: u(&v["size"]),
            chunks: u(&v["chunks"]),
            chunk_size: u(&v["options"]["max_chunk_size"]),
            sha256,
            modified: v["mtime"].as_str().unwrap_or_default().to_string(),
            nuid: v["nuid"].as_str().unwrap_or_default().to_string(),
            chunk_digests: v["metadata"][CHUNK_DIGESTS_KEY].as_str() == Some("sha256"),
            deleted: v["deleted"].as_bool().unwrap_or(false),
            revision,
        })
    }
}

/// One version of an object, as its chunks came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its id: the chunks are on `$O.<bucket>.C.<nuid>`.
    pub nuid: String,
    /// Bytes in all.
    pub size: u64,
    /// Chunks.
    pub chunks: u64,
    /// The largest chunk's size.
    pub chunk_size: usize,
    /// `SHA-256=...` of the whole.
    pub digest: String,
}

/// The meta record of a complete object, as NATS's object stores write it
/// (`name`, `bucket`, `nuid`, `size`, `chunks`, `mtime`, `digest`,
/// `options.max_chunk_size`), plus tape's `metadata` entry.
pub fn record(bucket: &str, name: &str, v: &Version, mtime_ns: i64) -> Value {
    json!({
        "name": name,
        "options": { "max_chunk_size": v.chunk_size },
        "bucket": bucket,
        "nuid": v.nuid,
        "size": v.size,
        "mtime": format_rfc3339(mtime_ns),
        "chunks": v.chunks,
        "digest": v.digest,
        "metadata": { CHUNK_DIGESTS_KEY: "sha256" },
    })
}

/// The record that marks `name` deleted (what NATS's object stores write:
/// size and chunks 0, no digest, `deleted`).
pub fn tombstone(bucket: &str, name: &str, nuid: &str, mtime_ns: i64) -> Value {
    json!({
        "name": name,
        "bucket": bucket,
        "nuid": nuid,
        "size": 0,
        "mtime": format_rfc3339(mtime_ns),
        "chunks": 0,
        "deleted": true,
    })
}

/// The stream of a bucket, as `nats object add` makes it: chunk and meta
/// subjects, roll-ups allowed (a meta record replaces the one before),
/// direct get, discard new messages past the limits.
pub fn stream_config(bucket: &str, max_bytes: Option<u64>, replicas: u32) -> Value {
    json!({
        "name": stream_of(bucket),
        "description": format!("tape file bucket {bucket}"),
        "subjects": [chunk_wildcard(bucket), meta_wildcard(bucket)],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64),
        "max_age": 0,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "storage": "file",
        "discard": "new",
        "num_replicas": replicas.max(1),
        "duplicate_window": 120_000_000_000u64,
        "allow_rollup_hdrs": true,
        "allow_direct": true,
        "deny_delete": false,
        "deny_purge": false,
    })
}

/// A new version id: 22 characters of `A-Z a-z 0-9` (as long as a NATS
/// nuid), from the kernel's random source, the clock and the pid.
pub fn nuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut r));
    let mut h = Sha256::new();
    h.update(r);
    h.update(tape_journal::clock::now_ns().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut n = u128::from_le_bytes(h.finalize()[..16].try_into().unwrap_or([0; 16]));
    (0..22)
        .map(|_| {
            let c = ALPHABET[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

/// Nanoseconds since the epoch as RFC 3339 in UTC with nanoseconds
/// (`2024-03-01T12:34:56.123456789Z`, Go's `time.RFC3339Nano` less the
/// trimming of zeros).
pub fn format_rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_names() {
        assert_eq!(stream_of("tape"), "OBJ_tape");
        assert_eq!(meta_subject("tape", "a.csv"), "$O.tape.M.YS5jc3Y=");
        assert_eq!(chunk_subject("b", "XYZ"), "$O.b.C.XYZ");
        assert!(check_name("data/2024-01-02 ticks.csv").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert_eq!(local_name("data/ticks.csv").unwrap(), "ticks.csv");
        assert!(local_name("data/").is_err());
        assert!(local_name("..").is_err());
        assert!(check_bucket("tape").is_ok());
        assert!(check_bucket("a.b").is_err());
        let n = nuid();
        assert_eq!(n.len(), 22);
        assert!(n.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(n, nuid());
    }

    #[test]
    fn digests() {
        // SHA-256 of "abc".
        let d = digest_of(b"abc");
        assert_eq!(d, "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=");
        assert_eq!(
            hex(&digest_bytes(&d).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(digest_bytes("MD5=abc"), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_709_296_496_123_456_789),
            "2024-03-01T12:34:56.123456789Z"
        );
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn records_read_back() {
        let v = Version {
            nuid: "N1".into(),
            size: 300,
            chunks: 3,
            chunk_size: 128,
            digest: digest_of(b""),
        };
        let r = record("tape", "x", &v, 0);
        let i = ObjectInfo::from_record(&r, 7).unwrap();
        assert_eq!(
            (i.size, i.chunks, i.chunk_size, i.revision),
            (300, 3, 128, 7)
        );
        assert!(i.chunk_digests && !i.deleted);
        assert_eq!(
            i.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let t = ObjectInfo::from_record(&tombstone("tape", "x", "N1", 0), 8).unwrap();
        assert!(t.deleted && t.sha256.is_empty());
    }
}
