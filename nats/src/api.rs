//! The JetStream API requests tape uses, as plain NATS requests with JSON
//! bodies (`$JS.API.*`), parsed here field by field.
//!
//! async-nats 0.51's typed JetStream calls deserialize the server's
//! answers into structs that expect fields of servers 2.10 and later
//! (`query_account`, and with it the key-value store, fails on 2.9.10),
//! and without its `server_2_10` feature it silently drops 2.10+ settings.
//! Reading only the fields tape needs from the JSON works the same on
//! 2.9.10 and on newer servers.

use crate::conn::Fail;
use async_nats::Client;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

/// JetStream's error code for "stream not found".
pub const STREAM_NOT_FOUND: u64 = 10059;
/// JetStream's error code for "wrong last sequence".
pub const WRONG_LAST_SEQUENCE: u64 = 10071;

/// An error answer of the JetStream API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP-like code (400, 404, 500, 503, ...).
    pub code: u64,
    /// JetStream's own code (10059: no such stream, ...).
    pub err_code: u64,
    /// The server's words.
    pub description: String,
}

/// What a stream holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamState {
    /// The stream's name.
    pub name: String,
    /// Its description (tape writes the source's page size there).
    pub description: String,
    /// First sequence it holds (last + 1 when empty).
    pub first_seq: u64,
    /// Last sequence it holds or held (0 when it never held any).
    pub last_seq: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Consumers on it.
    pub consumers: u64,
    /// Replicas.
    pub replicas: u64,
    /// The node leading it, when the server says.
    pub leader: Option<String>,
}

impl StreamState {
    fn from_json(v: &Value) -> StreamState {
        let st = &v["state"];
        let cfg = &v["config"];
        let u = |x: &Value| x.as_u64().unwrap_or(0);
        StreamState {
            name: cfg["name"].as_str().unwrap_or_default().to_string(),
            description: cfg["description"].as_str().unwrap_or_default().to_string(),
            first_seq: u(&st["first_seq"]),
            last_seq: u(&st["last_seq"]),
            messages: u(&st["messages"]),
            bytes: u(&st["bytes"]),
            consumers: u(&st["consumer_count"]),
            replicas: u(&cfg["num_replicas"]).max(1),
            leader: v["cluster"]["leader"].as_str().map(str::to_string),
        }
    }

    /// The page size written in the description by the export, if any.
    pub fn page_size(&self) -> Option<u64> {
        let at = self.description.find("page_size=")? + "page_size=".len();
        let digits: String = self.description[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .ok()
            .filter(|&p| tape_journal::format::valid_page_size(p))
    }
}

/// Sends one API request; a transport failure (no answer, no responders,
/// not connected) is [`Fail::Retry`], an error answer is `Ok(Err(..))`.
pub async fn request(
    c: &Client,
    subject: String,
    body: &Value,
) -> Result<Result<Value, ApiError>, Fail> {
    let payload = serde_json::to_vec(body).unwrap_or_default();
    let fut = c.request(subject.clone(), payload.into());
    let msg = match tokio::time::timeout(Duration::from_secs(4), fut).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            return Err(Fail::Retry(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => format!(
                    "no JetStream answers {subject} (is the server running with -js, and has it finished starting?)"
                ),
                _ => format!("{subject}: {e}"),
            }))
        }
        Err(_) => return Err(Fail::Retry(format!("{subject}: no answer within 4 s"))),
    };
    let v: Value = serde_json::from_slice(&msg.payload)
        .map_err(|e| Fail::Retry(format!("{subject}: the answer is not JSON ({e})")))?;
    if let Some(err) = v.get("error") {
        return Ok(Err(ApiError {
            code: err["code"].as_u64().unwrap_or(0),
            err_code: err["err_code"].as_u64().unwrap_or(0),
            description: err["description"].as_str().unwrap_or("?").to_string(),
        }));
    }
    Ok(Ok(v))
}

/// The stream's state, `None` when there is no such stream.
pub async fn stream_info(c: &Client, stream: &str) -> Result<Option<StreamState>, Fail> {
    match request(c, format!("$JS.API.STREAM.INFO.{stream}"), &json!({})).await? {
        Ok(v) => Ok(Some(StreamState::from_json(&v))),
        Err(e) if e.err_code == STREAM_NOT_FOUND || e.code == 404 => Ok(None),
        Err(e) => Err(Fail::Retry(format!(
            "cannot read stream {stream}: {}",
            e.description
        ))),
    }
}

/// Limits and replication of a stream made by the export.
#[derive(Debug, Clone, Default)]
pub struct StreamLimits {
    /// Replicas (1 to 5), 0 for the server's default (1).
    pub replicas: u32,
    /// Messages older than this are removed (`None`: kept).
    pub max_age: Option<Duration>,
    /// The oldest messages are removed past this many bytes (`None`: no
    /// limit).
    pub max_bytes: Option<u64>,
}

/// Makes a stream with one subject. An existing stream of that name with
/// the same settings is returned as it is.
pub async fn create_stream(
    c: &Client,
    stream: &str,
    subject: &str,
    description: &str,
    limits: &StreamLimits,
) -> Result<StreamState, Fail> {
    let cfg = json!({
        "name": stream,
        "description": description,
        "subjects": [subject],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_msgs_per_subject": -1,
        "max_bytes": limits.max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64),
        "max_age": limits.max_age.map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64),
        "max_msg_size": -1,
        "storage": "file",
        "discard": "old",
        "num_replicas": limits.replicas.max(1),
        "duplicate_window": 0,
        "allow_direct": true,
    });
    match request(c, format!("$JS.API.STREAM.CREATE.{stream}"), &cfg).await? {
        Ok(v) => Ok(StreamState::from_json(&v)),
        Err(e) => {
            let fatal = e.code == 400 && e.err_code != 10058;
            let text = format!("cannot create stream {stream}: {}", e.description);
            Err(if fatal {
                Fail::Fatal(text)
            } else {
                Fail::Retry(text)
            })
        }
    }
}

/// Removes every message below `seq` (on an empty stream: makes `seq` its
/// next sequence).
pub async fn purge_below(c: &Client, stream: &str, seq: u64) -> Result<(), Fail> {
    match request(
        c,
        format!("$JS.API.STREAM.PURGE.{stream}"),
        &json!({ "seq": seq }),
    )
    .await?
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Fail::Retry(format!(
            "cannot purge stream {stream} below seq {seq}: {}",
            e.description
        ))),
    }
}

/// The data of message `seq` of a stream, `None` when it does not hold it.
pub async fn message(c: &Client, stream: &str, seq: u64) -> Result<Option<Vec<u8>>, Fail> {
    match request(
        c,
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        &json!({ "seq": seq }),
    )
    .await?
    {
        Ok(v) => {
            let data = v["message"]["data"].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .map(Some)
                .map_err(|e| Fail::Retry(format!("message {seq} of {stream}: bad base64 ({e})")))
        }
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(Fail::Retry(format!(
            "cannot read message {seq} of stream {stream}: {}",
            e.description
        ))),
    }
}

/// Makes an ephemeral push consumer delivering to `deliver` from
/// `start_seq` (`None`: from the first message), without acks, with flow
/// control and an idle heartbeat; it goes away by itself `inactive` after
/// its subscriber does.
pub async fn push_consumer(
    c: &Client,
    stream: &str,
    deliver: &str,
    start_seq: Option<u64>,
    heartbeat: Duration,
    inactive: Duration,
) -> Result<String, Fail> {
    let mut cfg = json!({
        "deliver_subject": deliver,
        "ack_policy": "none",
        "replay_policy": "instant",
        "flow_control": true,
        "idle_heartbeat": heartbeat.as_nanos() as u64,
        "inactive_threshold": inactive.as_nanos() as u64,
        "mem_storage": true,
        "num_replicas": 1,
    });
    match start_seq {
        Some(s) => {
            cfg["deliver_policy"] = json!("by_start_sequence");
            cfg["opt_start_seq"] = json!(s);
        }
        None => cfg["deliver_policy"] = json!("all"),
    }
    let body = json!({ "stream_name": stream, "config": cfg });
    match request(c, format!("$JS.API.CONSUMER.CREATE.{stream}"), &body).await? {
        Ok(v) => Ok(v["name"].as_str().unwrap_or_default().to_string()),
        Err(e) if e.err_code == STREAM_NOT_FOUND => Err(Fail::Fatal(format!(
            "there is no stream {stream} on the server"
        ))),
        Err(e) => Err(Fail::Retry(format!(
            "cannot create a consumer on stream {stream}: {}",
            e.description
        ))),
    }
}

/// Deletes a consumer (best effort: it expires by itself anyway).
pub async fn delete_consumer(c: &Client, stream: &str, consumer: &str) {
    let _ = request(
        c,
        format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}"),
        &json!({}),
    )
    .await;
}

/// Every stream whose name starts with `prefix`.
pub async fn streams(c: &Client, prefix: &str) -> Result<Vec<StreamState>, Fail> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let v = match request(
            c,
            "$JS.API.STREAM.LIST".into(),
            &json!({ "offset": offset }),
        )
        .await?
        {
            Ok(v) => v,
            Err(e) => {
                return Err(Fail::Retry(format!(
                    "cannot list streams: {}",
                    e.description
                )))
            }
        };
        let page = v["streams"].as_array().cloned().unwrap_or_default();
        let total = v["total"].as_u64().unwrap_or(0);
        offset += page.len() as u64;
        for s in &page {
            let st = StreamState::from_json(s);
            if st.name.starts_with(prefix) {
                out.push(st);
            }
        }
        if page.is_empty() || offset >= total {
            break;
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The stream sequence and the number of messages pending after it, from
/// the reply subject JetStream delivers a message with:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
/// (servers before 2.10) or with domain and account hash after `$JS.ACK`
/// (2.10 and later).
pub fn delivery_info(reply: &str) -> Option<(u64, u64)> {
    let t: Vec<&str> = reply.split('.').collect();
    if t.len() < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let (sseq, pending) = if t.len() == 9 {
        (t[5], t[8])
    } else {
        (t[7], t[10])
    };
    Some((sseq.parse().ok()?, pending.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_reply_forms() {
        assert_eq!(
            delivery_info("$JS.ACK.TAPE_md.abc.1.42.42.1700000000000000000.7"),
            Some((42, 7))
        );
        assert_eq!(
            delivery_info("$JS.ACK.dom.hash.TAPE_md.abc.1.42.42.1700000000000000000.7.xyz"),
            Some((42, 7))
        );
        assert_eq!(delivery_info("_INBOX.x"), None);
        assert_eq!(delivery_info("$JS.ACK.a.b.c.d.e.f.g"), None);
    }

    #[test]
    fn page_size_from_description() {
        let s = StreamState {
            description: "tape journal md; page_size=1048576".into(),
            ..Default::default()
        };
        assert_eq!(s.page_size(), Some(1 << 20));
        let s = StreamState::default();
        assert_eq!(s.page_size(), None);
    }
}
