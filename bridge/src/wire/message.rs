//! The handshake and control messages: hello and challenge, auth and
//! welcome, subscribe, subscribed, opened, heartbeat, ack, error.

use super::{
    put_header, Bytes, ErrorCode, Kind, WireError, HEADER_LEN, HELLO_LEN, MAC_LEN, MAGIC,
    MAX_ACCOUNT, MAX_ERROR_TEXT, MAX_JOURNALS, NONCE_LEN,
};
use tape_journal::format::{u32_at, u64_at};

/// A hello or a challenge: the version its sender speaks and its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u32,
    /// The sender's nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// The whole message (header and body) as `kind` (hello or challenge).
    pub fn encode(&self, kind: Kind) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + HELLO_LEN);
        put_header(&mut out, kind, HELLO_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Parses a body of [`HELLO_LEN`] bytes.
    pub fn decode(body: &[u8]) -> Result<Hello, WireError> {
        if body.len() != HELLO_LEN || body[..8] != MAGIC {
            return Err(WireError::Malformed(
                "the hello does not start with the bridge's magic".into(),
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&body[16..]);
        Ok(Hello {
            version: u32_at(body, 8),
            nonce,
        })
    }
}

/// A whole auth or welcome message carrying `mac`.
pub fn encode_mac(kind: Kind, mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + MAC_LEN);
    put_header(&mut out, kind, MAC_LEN);
    out.extend_from_slice(mac);
    out
}

/// One journal of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The source journal's name.
    pub journal: String,
    /// First sequence number wanted; 0: from the first frame the source
    /// has (the replica is empty).
    pub from_seq: u64,
}

/// The subscribe message: who asks, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Account id of the subscriber (1 to 64 bytes of
    /// `A-Z a-z 0-9 _ - . @ :`).
    pub account: String,
    /// The journals, 1 to [`MAX_JOURNALS`], no name twice.
    pub journals: Vec<Want>,
}

/// Checks an account id: 1 to 64 bytes of `A-Z a-z 0-9 _ - . @ :`.
pub fn check_account(account: &str) -> Result<(), String> {
    let ok = !account.is_empty()
        && account.len() <= MAX_ACCOUNT
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad account id {account:?}: use 1 to {MAX_ACCOUNT} characters from A-Z a-z 0-9 _ - . @ :"
        ))
    }
}

impl Subscribe {
    /// The whole message.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        body.push(self.account.len() as u8);
        body.extend_from_slice(self.account.as_bytes());
        body.extend_from_slice(&(self.journals.len() as u16).to_le_bytes());
        for w in &self.journals {
            body.push(w.journal.len() as u8);
            body.extend_from_slice(w.journal.as_bytes());
            body.extend_from_slice(&w.from_seq.to_le_bytes());
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        put_header(&mut out, Kind::Subscribe, body.len());
        out.extend_from_slice(&body);
        out
    }

    /// Parses and checks a subscribe body.
    pub fn decode(body: &[u8]) -> Result<Subscribe, WireError> {
        let mut r = Bytes(body);
        let bad = |why: &str| WireError::Malformed(format!("bad subscribe: {why}"));
        let n = r.u8().ok_or_else(|| bad("empty"))? as usize;
        let account = r.str(n).ok_or_else(|| bad("account cut short"))?;
        check_account(&account).map_err(WireError::Malformed)?;
        let count = r.u16().ok_or_else(|| bad("no journal count"))? as usize;
        if count == 0 || count > MAX_JOURNALS {
            return Err(bad(&format!(
                "{count} journals (1 to {MAX_JOURNALS} allowed)"
            )));
        }
        let mut journals: Vec<Want> = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u8().ok_or_else(|| bad("journal cut short"))? as usize;
            let journal = r.str(n).ok_or_else(|| bad("journal name cut short"))?;
            tape_journal::check_name(&journal).map_err(|e| WireError::Malformed(e.to_string()))?;
            let from_seq = r.u64().ok_or_else(|| bad("start sequence cut short"))?;
            if journals.iter().any(|w| w.journal == journal) {
                return Err(bad(&format!("journal {journal} named twice")));
            }
            journals.push(Want { journal, from_seq });
        }
        if !r.0.is_empty() {
            return Err(bad("bytes after the last journal"));
        }
        Ok(Subscribe { account, journals })
    }
}

/// What the server says about one journal of an accepted subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalState {
    /// Page size of the source journal; 0: it does not exist yet (an
    /// [`Kind::Opened`] message follows when it appears).
    pub page_size: u64,
    /// Its last sequence number (0: none).
    pub last_seq: u64,
}

/// The whole subscribed message.
pub fn encode_subscribed(states: &[JournalState]) -> Vec<u8> {
    let len = 4 + 16 * states.len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    put_header(&mut out, Kind::Subscribed, len);
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    for s in states {
        out.extend_from_slice(&s.page_size.to_le_bytes());
        out.extend_from_slice(&s.last_seq.to_le_bytes());
    }
    out
}

/// Body limit of a subscribed message.
pub const fn subscribed_limit() -> usize {
    4 + 16 * MAX_JOURNALS
}

/// Parses a subscribed body for a subscription of `count` journals.
pub fn decode_subscribed(body: &[u8], count: usize) -> Result<Vec<JournalState>, WireError> {
    let mut r = Bytes(body);
    let n = r.u32().unwrap_or(u32::MAX) as usize;
    if n != count || body.len() != 4 + 16 * count {
        return Err(WireError::Malformed(format!(
            "subscribed names {n} journals where {count} were asked for"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let page_size = r.u64().unwrap_or(0);
        let last_seq = r.u64().unwrap_or(0);
        check_page_size(page_size, true)?;
        out.push(JournalState {
            page_size,
            last_seq,
        });
    }
    Ok(out)
}

fn check_page_size(page_size: u64, zero_ok: bool) -> Result<(), WireError> {
    if (zero_ok && page_size == 0) || tape_journal::format::valid_page_size(page_size) {
        Ok(())
    } else {
        Err(WireError::Malformed(format!(
            "page size {page_size} is not one a journal can have"
        )))
    }
}

/// Body size of an opened message.
pub const OPENED_LEN: usize = 16;

/// The whole opened message: journal `index` now exists, with pages of
/// `page_size` bytes.
pub fn encode_opened(index: u32, page_size: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + OPENED_LEN);
    put_header(&mut out, Kind::Opened, OPENED_LEN);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&page_size.to_le_bytes());
    out
}

/// Parses an opened body: (journal index, page size).
pub fn decode_opened(body: &[u8], count: usize) -> Result<(usize, u64), WireError> {
    if body.len() != OPENED_LEN {
        return Err(WireError::Malformed("opened of the wrong size".into()));
    }
    let index = u32_at(body, 0) as usize;
    let page_size = u64_at(body, 8);
    if index >= count {
        return Err(WireError::Malformed(format!(
            "opened names journal {index} of {count}"
        )));
    }
    check_page_size(page_size, false)?;
    Ok((index, page_size))
}

/// The whole heartbeat message.
pub fn encode_heartbeat() -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[4..].copy_from_slice(&(Kind::Heartbeat as u32).to_le_bytes());
    b
}

/// The whole ack message: the last sequence number of each replica (0:
/// none), in subscription order.
pub fn encode_ack(last_seqs: &[u64]) -> Vec<u8> {
    let len = 8 + 8 * last_seqs.len();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    put_header(&mut out, Kind::Ack, len);
    out.extend_from_slice(&(last_seqs.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for s in last_seqs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Body limit of an ack.
pub const fn ack_limit() -> usize {
    8 + 8 * MAX_JOURNALS
}

/// Parses an ack body for a subscription of `count` journals.
pub fn decode_ack(body: &[u8], count: usize) -> Result<Vec<u64>, WireError> {
    if body.len() != 8 + 8 * count || u32_at(body, 0) as usize != count {
        return Err(WireError::Malformed(format!(
            "an ack of {} bytes for {count} journals",
            body.len()
        )));
    }
    Ok((0..count).map(|i| u64_at(body, 8 + 8 * i)).collect())
}

/// The whole error message.
pub fn encode_error(code: ErrorCode, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + text.len());
    put_header(&mut out, Kind::Error, 4 + text.len());
    out.extend_from_slice(&(code as u32).to_le_bytes());
    out.extend_from_slice(text);
    out
}

/// Parses an error body.
pub fn decode_error(body: &[u8]) -> (ErrorCode, String) {
    if body.len() < 4 {
        return (ErrorCode::Other, "an error message cut short".into());
    }
    (
        ErrorCode::from_u32(u32_at(body, 0)),
        String::from_utf8_lossy(&body[4..]).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, MAX_SUBSCRIBE};

    #[test]
    fn subscribe_round_trips_and_checks() {
        let s = Subscribe {
            account: "acct-7@desk".into(),
            journals: vec![
                Want {
                    journal: "md".into(),
                    from_seq: 0,
                },
                Want {
                    journal: "orders.fb".into(),
                    from_seq: 123,
                },
            ],
        };
        let m = s.encode();
        let h = Header::parse(m[..8].try_into().unwrap());
        assert_eq!(
            h.expect(Kind::Subscribe, "subscribe", MAX_SUBSCRIBE, false),
            Ok(m.len() - 8)
        );
        assert_eq!(Subscribe::decode(&m[8..]).unwrap(), s);
        let mut twice = s.clone();
        twice.journals[1].journal = "md".into();
        assert!(Subscribe::decode(&twice.encode()[8..]).is_err());
        let mut bad = s.clone();
        bad.account = "a b".into();
        assert!(Subscribe::decode(&bad.encode()[8..]).is_err());
        let mut bad = s;
        bad.journals[0].journal = "../etc".into();
        assert!(Subscribe::decode(&bad.encode()[8..]).is_err());
    }

    #[test]
    fn small_messages_round_trip() {
        let hello = Hello {
            version: 1,
            nonce: [9; 32],
        };
        let m = hello.encode(Kind::Hello);
        assert_eq!(Hello::decode(&m[8..]).unwrap(), hello);
        let st = [
            JournalState {
                page_size: 1 << 20,
                last_seq: 9,
            },
            JournalState {
                page_size: 0,
                last_seq: 0,
            },
        ];
        assert_eq!(
            decode_subscribed(&encode_subscribed(&st)[8..], 2).unwrap(),
            st
        );
        assert_eq!(
            decode_opened(&encode_opened(1, 1 << 21)[8..], 2).unwrap(),
            (1, 1 << 21)
        );
        assert!(decode_opened(&encode_opened(1, 12345)[8..], 2).is_err());
        assert_eq!(
            decode_ack(&encode_ack(&[3, 4])[8..], 2).unwrap(),
            vec![3, 4]
        );
        let e = encode_error(ErrorCode::Ahead, "replica ahead");
        assert_eq!(
            decode_error(&e[8..]),
            (ErrorCode::Ahead, "replica ahead".into())
        );
    }
}
