//! The bucket's records: reading, replacing (compare-and-set with
//! roll-up), listing, removing, and the sweep of orphaned chunks.

use super::layout::{self, ObjectInfo};
use super::{check_name, chunk_subject, meta_subject, FileError, Files};
use crate::api;
use crate::conn::Fail;
use async_nats::header::HeaderMap;
use base64::Engine;
use serde_json::{json, Value};
use std::time::Duration;

/// The answer to a conditional publish of a record.
enum Cas {
    Stored(u64),
    Conflict,
}

impl Files {
    /// Makes the bucket's stream when it is missing.
    pub(super) async fn ensure_stream(&self) -> Result<(), Fail> {
        let c = &self.conn.client;
        if api::stream_info(c, &self.stream).await?.is_some() {
            return Ok(());
        }
        let cfg = layout::stream_config(&self.opts.bucket, None, 1);
        match api::request(c, format!("$JS.API.STREAM.CREATE.{}", self.stream), &cfg).await? {
            Ok(_) => Ok(()),
            // Made by another process at the same moment, or by `nats
            // object add` with other settings: use it as it is.
            Err(e) if e.err_code == 10058 => Ok(()),
            Err(e) => Err(Fail::Fatal(format!(
                "cannot make the bucket {} (stream {}): {}",
                self.opts.bucket, self.stream, e.description
            ))),
        }
    }

    /// The last record of `name` (deleted ones too), `None` when it never
    /// had one or the bucket does not exist.
    pub(super) async fn record(&self, name: &str) -> Result<Option<ObjectInfo>, Fail> {
        let subj = meta_subject(&self.opts.bucket, name);
        let ans = api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.MSG.GET.{}", self.stream),
            &json!({ "last_by_subj": subj }),
        )
        .await?;
        let v = match ans {
            Ok(v) => v,
            Err(e) if e.code == 404 || e.err_code == api::STREAM_NOT_FOUND => return Ok(None),
            Err(e) => {
                return Err(Fail::Retry(format!(
                    "cannot read the record of {name}: {}",
                    e.description
                )))
            }
        };
        let m = &v["message"];
        let data = base64::engine::general_purpose::STANDARD
            .decode(m["data"].as_str().unwrap_or_default())
            .map_err(|e| Fail::Retry(format!("{name}: bad base64 from the server ({e})")))?;
        let rec: Value = serde_json::from_slice(&data).map_err(|e| {
            Fail::Fatal(format!(
                "the record of {name} in bucket {} is not JSON ({e}): `tape file rm` it",
                self.opts.bucket
            ))
        })?;
        let info =
            ObjectInfo::from_record(&rec, m["seq"].as_u64().unwrap_or(0)).ok_or_else(|| {
                Fail::Fatal(format!(
                    "the record of {name} in bucket {} has no name: `tape file rm` it",
                    self.opts.bucket
                ))
            })?;
        Ok(Some(info))
    }

    /// How many messages the stream holds on `subject`.
    pub(super) async fn count(&self, subject: &str) -> Result<u64, Fail> {
        let ans = api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.INFO.{}", self.stream),
            &json!({ "subjects_filter": subject }),
        )
        .await?;
        match ans {
            Ok(v) => Ok(v["state"]["subjects"][subject].as_u64().unwrap_or(0)),
            Err(e) if e.err_code == api::STREAM_NOT_FOUND => Ok(0),
            Err(e) => Err(Fail::Retry(format!(
                "cannot count the messages of {subject}: {}",
                e.description
            ))),
        }
    }

    /// Publishes record `rec` of `name`, replacing (roll-up) the record at
    /// revision `expect` (0: there must be none).
    async fn publish_record(&self, name: &str, rec: &Value, expect: u64) -> Result<Cas, Fail> {
        let mut h = HeaderMap::new();
        h.insert("Nats-Rollup", "sub");
        h.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expect.to_string().as_str(),
        );
        let subj = meta_subject(&self.opts.bucket, name);
        let body = serde_json::to_vec(rec).unwrap_or_default();
        let fut = self.conn.client.request_with_headers(subj, h, body.into());
        let m = match tokio::time::timeout(Duration::from_secs(4), fut).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                return Err(Fail::Retry(format!(
                    "cannot publish the record of {name}: {e}"
                )))
            }
            Err(_) => {
                return Err(Fail::Retry(format!(
                    "no answer to the record of {name} within 4 s"
                )))
            }
        };
        let v: Value = serde_json::from_slice(&m.payload).map_err(|e| {
            Fail::Retry(format!(
                "the answer to the record of {name} is not JSON ({e})"
            ))
        })?;
        if let Some(e) = v.get("error") {
            if e["err_code"].as_u64() == Some(api::WRONG_LAST_SEQUENCE) {
                return Ok(Cas::Conflict);
            }
            return Err(Fail::Fatal(format!(
                "the server refused the record of {name}: {}",
                e["description"].as_str().unwrap_or("?")
            )));
        }
        Ok(Cas::Stored(v["seq"].as_u64().unwrap_or(0)))
    }

    /// Removes every chunk of version `nuid`.
    pub(super) async fn purge_chunks(&self, nuid: &str) -> Result<(), Fail> {
        if nuid.is_empty() {
            return Ok(());
        }
        let subj = chunk_subject(&self.opts.bucket, nuid);
        match api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.PURGE.{}", self.stream),
            &json!({ "filter": subj }),
        )
        .await?
        {
            Ok(_) => Ok(()),
            Err(e) if e.err_code == api::STREAM_NOT_FOUND => Ok(()),
            Err(e) => Err(Fail::Retry(format!(
                "cannot purge the chunks {subj}: {}",
                e.description
            ))),
        }
    }

    /// Publishes `rec` as the record of `name` in place of whatever record
    /// is there (reading it again when another process replaced it in
    /// between), then purges the chunks of the version it replaced unless
    /// that is `keep`. Returns the record replaced (`None`: there was none)
    /// and the new record's revision. `must_exist`: fail with
    /// [`FileError::Missing`] when there is no (undeleted) record.
    pub(super) fn replace_record(
        &self,
        name: &str,
        rec: &mut dyn FnMut(Option<&ObjectInfo>) -> Value,
        keep: &str,
        must_exist: bool,
    ) -> Result<(Option<ObjectInfo>, u64), FileError> {
        loop {
            let old = self.retrying("read the bucket", |f| f.rt.block_on(f.record(name)))?;
            let live = old.as_ref().filter(|o| !o.deleted);
            if must_exist && live.is_none() {
                return Err(self.missing(name));
            }
            let r = rec(live);
            let expect = old.as_ref().map_or(0, |o| o.revision);
            let cas = self.retrying("publish the record", |f| {
                f.rt.block_on(f.publish_record(name, &r, expect))
            })?;
            match cas {
                Cas::Conflict => continue,
                Cas::Stored(seq) => {
                    if let Some(o) = live.filter(|o| o.nuid != keep) {
                        self.retrying("purge the replaced chunks", |f| {
                            f.rt.block_on(f.purge_chunks(&o.nuid))
                        })?;
                    }
                    return Ok((live.cloned(), seq));
                }
            }
        }
    }

    pub(super) fn missing(&self, name: &str) -> FileError {
        FileError::Missing(format!(
            "there is no file {name} in bucket {} on {} (`tape file ls` lists them; a send that did not finish leaves none)",
            self.opts.bucket, self.opts.server.url
        ))
    }

    /// The record of `name`, `None` when there is no such file.
    pub fn info(&self, name: &str) -> Result<Option<ObjectInfo>, FileError> {
        check_name(name)?;
        let r = self.retrying("read the bucket", |f| f.rt.block_on(f.record(name)))?;
        Ok(r.filter(|o| !o.deleted))
    }

    /// Every file of the bucket, by name.
    pub fn list(&self) -> Result<Vec<ObjectInfo>, FileError> {
        let subjects = self.retrying("list the bucket", |f| {
            f.rt.block_on(f.subjects(&layout::meta_wildcard(&f.opts.bucket)))
        })?;
        let b64 = base64::engine::general_purpose::URL_SAFE;
        let mut out = Vec::new();
        for s in subjects {
            let Some(enc) = s.rsplit('.').next() else {
                continue;
            };
            let Some(name) = b64.decode(enc).ok().and_then(|b| String::from_utf8(b).ok()) else {
                continue;
            };
            if let Some(i) = self.retrying("read the bucket", |f| f.rt.block_on(f.record(&name)))? {
                if !i.deleted {
                    out.push(i);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The subjects matching `filter` that hold messages.
    async fn subjects(&self, filter: &str) -> Result<Vec<String>, Fail> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let ans = api::request(
                &self.conn.client,
                format!("$JS.API.STREAM.INFO.{}", self.stream),
                &json!({ "subjects_filter": filter, "offset": offset }),
            )
            .await?;
            let v = match ans {
                Ok(v) => v,
                Err(e) if e.err_code == api::STREAM_NOT_FOUND => return Ok(out),
                Err(e) => {
                    return Err(Fail::Retry(format!(
                        "cannot list bucket {}: {}",
                        self.opts.bucket, e.description
                    )))
                }
            };
            let page: Vec<String> = v["state"]["subjects"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            let total = v["total"]
                .as_u64()
                .or_else(|| v["state"]["num_subjects"].as_u64())
                .unwrap_or(0);
            offset += page.len() as u64;
            let done = page.is_empty() || offset >= total;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Deletes file `name`: a deletion record in place of its record, then
    /// its chunks purged. Returns what it was.
    pub fn remove(&self, name: &str) -> Result<ObjectInfo, FileError> {
        check_name(name)?;
        let bucket = self.opts.bucket.clone();
        let now = tape_journal::clock::now_ns();
        let (old, _) = self.replace_record(
            name,
            &mut |live| {
                let nuid = live.map_or("", |o| o.nuid.as_str());
                layout::tombstone(&bucket, name, nuid, now)
            },
            "",
            true,
        )?;
        old.ok_or_else(|| self.missing(name))
    }

    /// Purges the chunks that no record names and whose last chunk is
    /// older than `min_age` (left by sends that were killed); returns how
    /// many versions it purged.
    pub fn sweep(&self, min_age: Duration) -> Result<usize, FileError> {
        let bucket = self.opts.bucket.clone();
        let chunks = self.retrying("list the bucket", |f| {
            f.rt.block_on(f.subjects(&layout::chunk_wildcard(&bucket)))
        })?;
        if chunks.is_empty() {
            return Ok(0);
        }
        let named: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|o| o.nuid).collect();
        let now = tape_journal::clock::now_ns();
        let mut purged = 0;
        for subj in chunks {
            let Some(nuid) = subj.rsplit('.').next() else {
                continue;
            };
            if named.contains(nuid) {
                continue;
            }
            let t = self.retrying("read the bucket", |f| f.rt.block_on(f.last_time(&subj)))?;
            let Some(t) = t else { continue };
            if now.saturating_sub(t) < min_age.as_nanos() as i64 {
                continue;
            }
            // Read the records again: a send may have published its record
            // since the list above.
            if self.list()?.iter().any(|o| o.nuid == nuid) {
                continue;
            }
            self.retrying("purge chunks", |f| f.rt.block_on(f.purge_chunks(nuid)))?;
            purged += 1;
        }
        Ok(purged)
    }

    /// When the last message on `subject` was stored (ns since the epoch).
    async fn last_time(&self, subject: &str) -> Result<Option<i64>, Fail> {
        match api::request(
            &self.conn.client,
            format!("$JS.API.STREAM.MSG.GET.{}", self.stream),
            &json!({ "last_by_subj": subject }),
        )
        .await?
        {
            Ok(v) => Ok(v["message"]["time"]
                .as_str()
                .and_then(crate::vars::text::parse_rfc3339)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(Fail::Retry(format!(
                "cannot read {subject}: {}",
                e.description
            ))),
        }
    }
}
