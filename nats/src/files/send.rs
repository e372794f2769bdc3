//! Sending: chunks pipelined under a new nuid, the record last.

use super::layout::{self, ObjectInfo, Version};
use super::{check_name, chunk_subject, other, FileError, Files, Progress};
use async_nats::{HeaderMap, HeaderValue, Subject};
use futures_util::{FutureExt, StreamExt};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Files {
    /// Sends the file at `path` as `name`, replacing the file of that name
    /// once every chunk is on the server. Returns its record.
    pub fn send(
        &self,
        path: &Path,
        name: &str,
        progress: Progress<'_>,
    ) -> Result<ObjectInfo, FileError> {
        check_name(name)?;
        let mut f = std::fs::File::open(path)
            .map_err(|e| other(format!("cannot read {}: {e}", path.display())))?;
        let meta = f
            .metadata()
            .map_err(|e| other(format!("cannot read {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(other(format!(
                "{} is not a file: give the path of a file",
                path.display()
            )));
        }
        let what = path.display().to_string();
        self.send_reading(&mut f, &what, name, Some(meta.len()), progress)
    }

    /// Sends what `input` gives until its end as `name`; `size`, when
    /// given, is how many bytes it must give (a file that changes size
    /// while it is sent is refused).
    pub fn send_from(
        &self,
        input: &mut dyn Read,
        name: &str,
        size: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<ObjectInfo, FileError> {
        self.send_reading(input, "the input", name, size, progress)
    }

    /// [`Files::send_from`], naming the input `what` in errors.
    fn send_reading(
        &self,
        input: &mut dyn Read,
        what: &str,
        name: &str,
        size: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<ObjectInfo, FileError> {
        check_name(name)?;
        self.retrying("make the bucket", |f| f.rt.block_on(f.ensure_stream()))?;
        let nuid = layout::nuid();
        let subject = chunk_subject(&self.opts.bucket, &nuid);
        let sent = self
            .send_chunks(input, what, name, &nuid, size, progress)
            .and_then(|sent| {
                // Every chunk acknowledged: check the stream holds them all
                // before the record makes them the file.
                let held = self.retrying("count the chunks", |f| f.rt.block_on(f.count(&subject)))?;
                if held != sent.chunks {
                    return Err(other(format!(
                        "the server holds {held} of the {} chunks of {name} just sent (were they purged?): the file on the server is unchanged; send it again",
                        sent.chunks
                    )));
                }
                Ok(sent)
            });
        let sent = match sent {
            Ok(s) => s,
            Err(e) => {
                // Nothing names these chunks: remove them (best effort; a
                // later sweep removes them otherwise).
                let _ = self.rt.block_on(self.purge_chunks(&nuid));
                return Err(e);
            }
        };
        let now = tape_journal::clock::now_ns();
        let rec = layout::record(&self.opts.bucket, name, &sent, now);
        let (_, revision) = self.replace_record(name, &mut |_| rec.clone(), &nuid, false)?;
        if let Err(e) = self.sweep(super::ORPHAN_AGE) {
            (self.opts.log)(&format!("could not sweep old unfinished sends: {e}"));
        }
        let mut info = ObjectInfo::from_record(&rec, revision)
            .ok_or_else(|| other("the record just made cannot be read back"))?;
        info.revision = revision;
        Ok(info)
    }

    /// Publishes the chunks, at most `window` unacknowledged at once, and
    /// waits for every ack.
    fn send_chunks(
        &self,
        input: &mut dyn Read,
        what: &str,
        name: &str,
        nuid: &str,
        size: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<Version, FileError> {
        let c = &self.conn.client;
        let url = &self.opts.server.url;
        let epoch = self.conn.epoch.load(Ordering::Acquire);
        let inbox = c.new_inbox();
        let mut acks = self
            .rt
            .block_on(c.subscribe(format!("{inbox}.>")))
            .map_err(|e| other(format!("cannot subscribe to the acks on {url}: {e}")))?;
        let subject = Subject::from(chunk_subject(&self.opts.bucket, nuid));
        let stream_hdr = HeaderValue::from(self.stream.as_str());
        let chunk = self.opts.chunk_size;
        let window = self.opts.window.max(1) as u64;
        let total = size.unwrap_or(0);
        let mut whole = Sha256::new();
        let (mut sent, mut acked, mut bytes) = (0u64, 0u64, 0u64);
        let mut last_ack = Instant::now();
        let mut eof = false;
        progress(0, total);
        loop {
            // Take the acks that came; wait for one while the window is
            // full or the input is done.
            let must_wait = sent - acked >= window || (eof && acked < sent);
            let got = if must_wait {
                let wait = async {
                    tokio::time::timeout(Duration::from_millis(200), acks.next())
                        .await
                        .ok()
                };
                self.rt.block_on(wait)
            } else {
                acks.next().now_or_never()
            };
            match got {
                Some(Some(m)) => {
                    check_ack(&m, name)?;
                    acked += 1;
                    last_ack = Instant::now();
                    continue;
                }
                Some(None) => {
                    return Err(other(format!(
                        "the subscription to the acks on {url} ended while sending {name}: the file on the server is unchanged; send it again"
                    )))
                }
                None => {}
            }
            if self.conn.epoch.load(Ordering::Acquire) != epoch {
                return Err(other(format!(
                    "lost the connection to {url} while sending {name} (chunk {acked}): the file on the server is unchanged; send it again"
                )));
            }
            if acked < sent && last_ack.elapsed() >= self.opts.timeout {
                return Err(other(format!(
                    "{url} acknowledged no chunk of {name} for {} s (chunk {acked} sent): the file on the server is unchanged; send it again",
                    self.opts.timeout.as_secs()
                )));
            }
            if eof && acked == sent {
                break;
            }
            if must_wait {
                continue;
            }
            let mut buf = vec![0u8; chunk];
            let n = read_full(input, &mut buf)
                .map_err(|e| other(format!("cannot read {what}: {e}")))?;
            if n == 0 {
                eof = true;
                continue;
            }
            buf.truncate(n);
            whole.update(&buf);
            let mut h = HeaderMap::new();
            h.insert("Nats-Expected-Stream", stream_hdr.clone());
            h.insert(layout::CHUNK_INDEX_HEADER, sent.to_string().as_str());
            h.insert(
                layout::CHUNK_DIGEST_HEADER,
                layout::digest_of(&buf).as_str(),
            );
            let reply = Subject::from(format!("{inbox}.{sent}"));
            let publish = c.publish_with_reply_and_headers(subject.clone(), reply, h, buf.into());
            let publish = async { tokio::time::timeout(self.opts.timeout, publish).await };
            match self.rt.block_on(publish) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(other(format!(
                        "cannot publish chunk {sent} of {name} to {url}: {e}"
                    )))
                }
                Err(_) => {
                    return Err(other(format!(
                        "cannot publish chunk {sent} of {name} to {url}: the client's queue stayed full for {} s",
                        self.opts.timeout.as_secs()
                    )))
                }
            }
            if sent == acked {
                last_ack = Instant::now();
            }
            sent += 1;
            bytes += n as u64;
            progress(bytes, total.max(bytes));
        }
        if let Some(s) = size {
            if s != bytes {
                return Err(other(format!(
                    "{what} changed size while it was sent ({s} bytes when it was opened, {bytes} read): the file on the server is unchanged; send it again once it is complete"
                )));
            }
        }
        Ok(Version {
            nuid: nuid.to_string(),
            size: bytes,
            chunks: sent,
            chunk_size: chunk,
            digest: layout::digest_text(&whole.finalize()),
        })
    }
}

/// Checks one chunk's ack: `{"stream":..,"seq":N}`, or an error.
fn check_ack(m: &async_nats::Message, name: &str) -> Result<(), FileError> {
    let which = m.subject.rsplit('.').next().unwrap_or("?");
    if let Some(st) = m.status {
        return Err(other(format!(
            "chunk {which} of {name} was not stored (status {st}): the file on the server is unchanged; send it again"
        )));
    }
    let v: serde_json::Value = serde_json::from_slice(&m.payload).map_err(|e| {
        other(format!(
            "the ack of chunk {which} of {name} is not JSON ({e})"
        ))
    })?;
    if let Some(e) = v.get("error") {
        return Err(other(format!(
            "the server refused chunk {which} of {name}: {}: the file on the server is unchanged",
            e["description"].as_str().unwrap_or("an error")
        )));
    }
    if v["seq"].as_u64().is_none() {
        return Err(other(format!(
            "the ack of chunk {which} of {name} has no sequence: {v}"
        )));
    }
    Ok(())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
