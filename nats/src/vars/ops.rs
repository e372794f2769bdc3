//! Reading a key, the compare-and-set that every change is, and the
//! operations built on it (put, del, the dict and list operations).

use super::text::{nuid, op_of_raw_headers, parse_rfc3339, parse_value};
use super::{check_name, other, Entry, VarError, Vars, MAX_VALUE};
use crate::api;
use crate::conn::Fail;
use async_nats::header::HeaderMap;
use base64::Engine;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What an update function asks for.
enum Step {
    Put(Value),
    Delete,
}

/// The server's answer to one conditional publish.
enum Ack {
    Stored(u64),
    Conflict,
}

impl Vars {
    /// The last message of `name`: `(revision, entry)`, revision 0 when the
    /// key never had one, entry `None` when it is deleted.
    async fn last(&self, name: &str) -> Result<(u64, Option<Entry>), Fail> {
        let subj = format!("{}{name}", self.prefix);
        let ans = api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.MSG.GET.{}", self.stream),
            &json!({ "last_by_subj": subj }),
        )
        .await?;
        let v = match ans {
            Ok(v) => v,
            Err(e) if e.code == 404 => return Ok((0, None)),
            Err(e) if e.err_code == api::STREAM_NOT_FOUND => {
                return Err(Fail::Retry(format!(
                    "the bucket {} has no stream {} (was it deleted?)",
                    self.opts.bucket, self.stream
                )))
            }
            Err(e) => {
                return Err(Fail::Retry(format!(
                    "cannot read {name}: {}",
                    e.description
                )))
            }
        };
        let m = &v["message"];
        let seq = m["seq"].as_u64().unwrap_or(0);
        let b64 = base64::engine::general_purpose::STANDARD;
        let hdrs = m["hdrs"]
            .as_str()
            .and_then(|h| b64.decode(h).ok())
            .unwrap_or_default();
        let op = op_of_raw_headers(&hdrs);
        if op != "put" {
            return Ok((seq, None));
        }
        let data = b64
            .decode(m["data"].as_str().unwrap_or_default())
            .map_err(|e| Fail::Retry(format!("{name}: bad base64 from the server ({e})")))?;
        let value = parse_value(&data);
        let time_ns = m["time"].as_str().and_then(parse_rfc3339).unwrap_or(0);
        Ok((
            seq,
            Some(Entry {
                name: name.to_string(),
                value,
                revision: seq,
                time_ns,
            }),
        ))
    }

    /// One conditional publish, sent again as it is until the server
    /// answers (see the module docs).
    fn publish_cas(&self, name: &str, expect: u64, step: &Step, id: &str) -> Result<Ack, VarError> {
        let subj = format!("{}{name}", self.prefix);
        let mut h = HeaderMap::new();
        h.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expect.to_string().as_str(),
        );
        h.insert("Nats-Msg-Id", id);
        let payload = match step {
            Step::Put(v) => {
                let b = serde_json::to_vec(v).unwrap_or_default();
                if b.len() > MAX_VALUE {
                    return Err(other(format!(
                        "the new value of {name} is {} bytes, more than {MAX_VALUE}: keep variables small (send files with `tape file send`)",
                        b.len()
                    )));
                }
                b
            }
            Step::Delete => {
                h.insert("KV-Operation", "DEL");
                Vec::new()
            }
        };
        self.retrying(&format!("change {name}"), |v| {
            let fut =
                v.conn
                    .client
                    .request_with_headers(subj.clone(), h.clone(), payload.clone().into());
            let msg = match v
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(3), fut).await })
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => return Err(Fail::Retry(format!("no answer for {name}: {e}"))),
                Err(_) => return Err(Fail::Retry(format!("no answer for {name} within 3 s"))),
            };
            let a: Value = serde_json::from_slice(&msg.payload)
                .map_err(|_| Fail::Retry(format!("the answer for {name} is not JSON")))?;
            if let Some(err) = a.get("error") {
                let code = err["err_code"].as_u64().unwrap_or(0);
                let d = err["description"].as_str().unwrap_or("?");
                if code == api::WRONG_LAST_SEQUENCE || d.contains("wrong last sequence") {
                    return Ok(Ack::Conflict);
                }
                if err["code"].as_u64() == Some(503) {
                    return Err(Fail::Retry(format!("{name}: {d}")));
                }
                return Err(Fail::Fatal(format!(
                    "the server refused the change of {name}: {d}"
                )));
            }
            Ok(Ack::Stored(a["seq"].as_u64().unwrap_or(0)))
        })
    }

    /// Reads, applies `f` to the current value (`None`: missing), writes
    /// the result by compare-and-set; again on conflict. Returns the new
    /// revision and what `f` returned beside the step.
    fn update<T>(
        &self,
        name: &str,
        mut f: impl FnMut(Option<&Value>) -> Result<(Step, T), VarError>,
    ) -> Result<(u64, T), VarError> {
        check_name(name)?;
        let id = nuid();
        let until = Instant::now() + self.opts.timeout;
        loop {
            let (rev, cur) =
                self.retrying(&format!("read {name}"), |v| v.rt.block_on(v.last(name)))?;
            let (step, out) = f(cur.as_ref().map(|e| &e.value))?;
            match self.publish_cas(name, rev, &step, &id)? {
                Ack::Stored(seq) => return Ok((seq, out)),
                Ack::Conflict => {
                    if Instant::now() >= until {
                        return Err(other(format!(
                            "{name} kept changing under this update for {} s: try again",
                            self.opts.timeout.as_secs()
                        )));
                    }
                }
            }
        }
    }

    /// The variable, `None` when it does not exist.
    pub fn get(&self, name: &str) -> Result<Option<Entry>, VarError> {
        check_name(name)?;
        let (_, e) = self.retrying(&format!("read {name}"), |v| v.rt.block_on(v.last(name)))?;
        Ok(e)
    }

    /// Sets the variable; returns its new revision.
    pub fn put(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |_| Ok((Step::Put(value.clone()), ())))
            .map(|r| r.0)
    }

    /// Deletes the variable; [`VarError::Missing`] when it does not exist.
    pub fn del(&self, name: &str) -> Result<u64, VarError> {
        self.update(name, |cur| match cur {
            None => Err(VarError::Missing(format!("there is no variable {name}"))),
            Some(_) => Ok((Step::Delete, ())),
        })
        .map(|r| r.0)
    }

    /// Sets `key` of the object `name` (made `{}` when missing).
    pub fn dict_set(&self, name: &str, key: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut m = object_of(name, cur, "dict-set", true)?;
            m.insert(key.to_string(), value.clone());
            Ok((Step::Put(Value::Object(m)), ()))
        })
        .map(|r| r.0)
    }

    /// Removes `key` of the object `name`; [`VarError::Missing`] when it is
    /// not there. Returns the value it had.
    pub fn dict_del(&self, name: &str, key: &str) -> Result<Value, VarError> {
        self.update(name, |cur| {
            let mut m = object_of(name, cur, "dict-del", false)?;
            let old = m
                .remove(key)
                .ok_or_else(|| VarError::Missing(format!("{name} has no key {key:?}")))?;
            Ok((Step::Put(Value::Object(m)), old))
        })
        .map(|r| r.1)
    }

    /// Appends `value` to the list `name` (made `[]` when missing); returns
    /// the new revision.
    pub fn list_push(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-push", true)?;
            l.push(value.clone());
            Ok((Step::Put(Value::Array(l)), ()))
        })
        .map(|r| r.0)
    }

    /// Removes and returns item `index` of the list `name` (the last when
    /// `None`; negative counts from the end).
    pub fn list_pop(&self, name: &str, index: Option<i64>) -> Result<Value, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-pop", false)?;
            if l.is_empty() {
                return Err(VarError::Missing(format!("the list {name} is empty")));
            }
            let n = l.len() as i64;
            let i = index.unwrap_or(-1);
            let at = if i < 0 { n + i } else { i };
            if !(0..n).contains(&at) {
                return Err(other(format!(
                    "the list {name} has {n} items: give an INDEX from 0 to {} (or -1 to -{n} from the end)",
                    n - 1
                )));
            }
            let item = l.remove(at as usize);
            Ok((Step::Put(Value::Array(l)), item))
        })
        .map(|r| r.1)
    }

    /// Removes the first item of the list `name` equal to `value`;
    /// [`VarError::Missing`] when there is none.
    pub fn list_remove(&self, name: &str, value: &Value) -> Result<u64, VarError> {
        self.update(name, |cur| {
            let mut l = list_of(name, cur, "list-remove", false)?;
            let at = l
                .iter()
                .position(|x| x == value)
                .ok_or_else(|| VarError::Missing(format!("the list {name} holds no {value}")))?;
            l.remove(at);
            Ok((Step::Put(Value::Array(l)), ()))
        })
        .map(|r| r.0)
    }
}

/// The object variable `name` holds (`cur`), copied for `op` to change: an
/// empty one when it does not exist and `or_empty`, else
/// [`VarError::Missing`]; an error when it holds something else.
fn object_of(
    name: &str,
    cur: Option<&Value>,
    op: &str,
    or_empty: bool,
) -> Result<serde_json::Map<String, Value>, VarError> {
    match cur {
        None if or_empty => Ok(serde_json::Map::new()),
        None => Err(VarError::Missing(format!("there is no variable {name}"))),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(v) => Err(not_a(name, "an object", v, op)),
    }
}

/// The list variable `name` holds, as [`object_of`] does for objects.
fn list_of(
    name: &str,
    cur: Option<&Value>,
    op: &str,
    or_empty: bool,
) -> Result<Vec<Value>, VarError> {
    match cur {
        None if or_empty => Ok(Vec::new()),
        None => Err(VarError::Missing(format!("there is no variable {name}"))),
        Some(Value::Array(l)) => Ok(l.clone()),
        Some(v) => Err(not_a(name, "a list", v, op)),
    }
}

fn not_a(name: &str, what: &str, v: &Value, op: &str) -> VarError {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    other(format!(
        "{name} holds {kind}, not {what}: {op} needs {what} (or no variable); `tape var put` a new value first"
    ))
}
