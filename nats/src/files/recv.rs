//! Receiving: the chunks checked one by one into a temporary file beside
//! the target, renamed onto it only when size and SHA-256 match.

use super::layout::{self, ObjectInfo};
use super::{check_name, chunk_subject, local_name, other, FileError, Files, Progress};
use crate::api;
use crate::conn::Fail;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The temporary file a receive writes, removed unless renamed onto the
/// target.
struct Part {
    path: PathBuf,
    file: Option<File>,
}

impl Part {
    /// `.<file>.tape-part` beside `target`, locked (a second receive of
    /// the same target is refused), emptied (a killed receive's leftover
    /// is taken over).
    fn create(target: &Path) -> Result<Part, FileError> {
        let dir = parent_of(target);
        let file_name = target
            .file_name()
            .ok_or_else(|| other(format!("{} names no file", target.display())))?;
        let path = dir.join(format!(".{}.tape-part", file_name.to_string_lossy()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| other(format!("cannot write in {}: {e}", dir.display())))?;
        // SAFETY: flock takes a descriptor this process owns (`file` lives
        // across the call) and touches no memory.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(other(format!(
                "another `tape file recv` is writing {} (it holds {}): wait for it to finish",
                target.display(),
                path.display()
            )));
        }
        let part = Part {
            path,
            file: Some(file),
        };
        part.file()?
            .set_len(0)
            .map_err(|e| other(format!("cannot write {}: {e}", part.path.display())))?;
        Ok(part)
    }

    fn file(&self) -> Result<&File, FileError> {
        self.file
            .as_ref()
            .ok_or_else(|| other("the temporary file is closed"))
    }

    fn write(&mut self, b: &[u8]) -> Result<(), FileError> {
        let mut f = self.file()?;
        f.write_all(b)
            .map_err(|e| other(format!("cannot write {}: {e}", self.path.display())))
    }

    /// Syncs the file, renames it onto `target`, syncs the folder.
    fn commit(mut self, target: &Path) -> Result<(), FileError> {
        let f = self.file()?;
        f.sync_all()
            .map_err(|e| other(format!("cannot write {}: {e}", self.path.display())))?;
        std::fs::rename(&self.path, target).map_err(|e| {
            other(format!(
                "cannot rename {} to {}: {e}",
                self.path.display(),
                target.display()
            ))
        })?;
        self.file = None;
        if let Ok(d) = File::open(parent_of(target)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Where a receive of `name` to `out` writes: `out` itself, or inside it
/// when it is a folder.
pub fn target_of(name: &str, out: &Path) -> Result<PathBuf, FileError> {
    let t = if out.is_dir() {
        out.join(local_name(name)?)
    } else if out.as_os_str().to_string_lossy().ends_with('/') {
        return Err(other(format!(
            "cannot write into {}: there is no such folder",
            out.display()
        )));
    } else {
        out.to_path_buf()
    };
    let dir = parent_of(&t);
    if !dir.is_dir() {
        return Err(other(format!(
            "cannot write {}: there is no folder {}",
            t.display(),
            dir.display()
        )));
    }
    Ok(t)
}

/// Stream and consumer sequence of a delivery, from its reply subject
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>`,
/// or with domain and account hash on 2.10+).
fn sequences(reply: &str) -> Option<(u64, u64)> {
    let t: Vec<&str> = reply.split('.').collect();
    if t.len() < 9 || t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let o = if t.len() == 9 { 5 } else { 7 };
    Some((t[o].parse().ok()?, t[o + 1].parse().ok()?))
}

/// How far a receive got: what the next session goes on from.
struct Got {
    index: u64,
    bytes: u64,
    last_sseq: u64,
    whole: Sha256,
}

/// How one consumer's life ended.
enum End {
    Done,
    /// Make the consumer again from where it got.
    Again(String),
}

impl Files {
    /// Receives file `name` into `out` (a file path, or a folder to write
    /// `<name's last part>` in). Returns its record and the path written.
    pub fn recv(
        &self,
        name: &str,
        out: &Path,
        progress: Progress<'_>,
    ) -> Result<(ObjectInfo, PathBuf), FileError> {
        check_name(name)?;
        let target = target_of(name, out)?;
        let info = self.info(name)?.ok_or_else(|| self.missing(name))?;
        let want = digest_of_record(&info, name)?;
        let subj = chunk_subject(&self.opts.bucket, &info.nuid);
        let held = self.retrying("count the chunks", |f| f.rt.block_on(f.count(&subj)))?;
        if held != info.chunks {
            return Err(FileError::Damaged(format!(
                "file {name} is incomplete on the server: it holds {held} of its {} chunks on {subj}: send it again (nothing written at {})",
                info.chunks,
                target.display()
            )));
        }
        let mut part = Part::create(&target)?;
        let got = self.fetch(&info, &subj, &mut part, &target, progress)?;
        let digest = got.whole.finalize();
        if got.bytes != info.size {
            return Err(FileError::Damaged(format!(
                "file {name} came to {} bytes, its record says {}: nothing written at {}",
                got.bytes,
                info.size,
                target.display()
            )));
        }
        if digest.as_slice() != want.as_slice() {
            return Err(FileError::Damaged(format!(
                "the SHA-256 of file {name} as received ({}) is not the one it was sent with ({}): nothing written at {}",
                layout::hex(&digest),
                info.sha256,
                target.display()
            )));
        }
        part.commit(&target)?;
        Ok((info, target))
    }

    /// Every chunk of `info`, checked, into `part`.
    fn fetch(
        &self,
        info: &ObjectInfo,
        subj: &str,
        part: &mut Part,
        target: &Path,
        progress: Progress<'_>,
    ) -> Result<Got, FileError> {
        let mut got = Got {
            index: 0,
            bytes: 0,
            last_sseq: 0,
            whole: Sha256::new(),
        };
        progress(0, info.size);
        let mut heard = Instant::now();
        let mut said = String::new();
        while got.index < info.chunks {
            let before = got.index;
            match self.session(info, subj, part, target, &mut got, progress) {
                Ok(End::Done) => break,
                Ok(End::Again(why)) => {
                    if got.index > before {
                        heard = Instant::now();
                    }
                    if heard.elapsed() >= self.opts.timeout {
                        return Err(other(format!(
                            "no chunk of {} came for {} s ({why}): nothing written at {}",
                            info.name,
                            self.opts.timeout.as_secs(),
                            target.display()
                        )));
                    }
                    if why != said {
                        (self.opts.log)(&format!("{why}; going on from chunk {}", got.index));
                        said = why;
                    }
                    self.still_there(info, subj, target)?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// After a stall: the record must still be the one being received,
    /// and its chunks all there.
    fn still_there(&self, info: &ObjectInfo, subj: &str, target: &Path) -> Result<(), FileError> {
        let name = &info.name;
        let now = self.retrying("read the bucket", |f| f.rt.block_on(f.record(name)))?;
        match now {
            Some(n) if n.nuid == info.nuid && !n.deleted => {}
            _ => {
                return Err(other(format!(
                    "file {name} was replaced or removed on the server while it was being received: nothing written at {}; receive it again",
                    target.display()
                )))
            }
        }
        let held = self.retrying("count the chunks", |f| f.rt.block_on(f.count(subj)))?;
        if held != info.chunks {
            return Err(FileError::Damaged(format!(
                "chunks of file {name} are missing on the server (it holds {held} of its {} chunks now; purged, or lost by a server that was killed): nothing written at {}; send it again",
                info.chunks,
                target.display()
            )));
        }
        Ok(())
    }

    /// One push consumer from where `got` is, until the last chunk or
    /// something that needs a new consumer.
    fn session(
        &self,
        info: &ObjectInfo,
        subj: &str,
        part: &mut Part,
        target: &Path,
        got: &mut Got,
        progress: Progress<'_>,
    ) -> Result<End, FileError> {
        let c = &self.conn.client;
        let epoch = self.conn.epoch.load(Ordering::Acquire);
        let inbox = c.new_inbox();
        let mut sub = match self.rt.block_on(c.subscribe(inbox.clone())) {
            Ok(s) => s,
            Err(e) => return Ok(End::Again(format!("cannot subscribe: {e}"))),
        };
        let consumer = match self
            .rt
            .block_on(self.chunk_consumer(subj, &inbox, got.last_sseq))
        {
            Ok(c) => c,
            Err(Fail::Fatal(e)) => return Err(other(e)),
            Err(Fail::Retry(e)) => return Ok(End::Again(e)),
        };
        let end = |r: Result<End, FileError>| {
            self.rt
                .block_on(api::delete_consumer(c, &self.stream, &consumer));
            r
        };
        let mut expect_cseq = 1u64;
        let mut heard = Instant::now();
        let ack_every = (self.opts.window as u64 / 4).max(1);
        let name = &info.name;
        let nowhere = || format!("nothing written at {}", target.display());
        loop {
            if self.conn.epoch.load(Ordering::Acquire) != epoch {
                return end(Ok(End::Again("the connection was made again".into())));
            }
            let next = async { tokio::time::timeout(Duration::from_millis(500), sub.next()).await };
            let m = match self.rt.block_on(next) {
                Err(_) => {
                    if heard.elapsed() > Duration::from_secs(4) {
                        return end(Ok(End::Again(format!("no chunk of {name} for 4 s"))));
                    }
                    continue;
                }
                Ok(None) => return end(Ok(End::Again("the subscription ended".into()))),
                Ok(Some(m)) => m,
            };
            if crate::conn::answer_heartbeat(&self.rt, c, &m) {
                continue;
            }
            if let Some(st) = m.status {
                return end(Ok(End::Again(format!("the consumer ended ({st})"))));
            }
            let Some((sseq, cseq)) = m.reply.as_deref().and_then(sequences) else {
                continue;
            };
            if cseq != expect_cseq {
                return end(Ok(End::Again(format!(
                    "message {cseq} of the consumer came where {expect_cseq} was expected"
                ))));
            }
            expect_cseq += 1;
            if sseq <= got.last_sseq {
                // Sent again (its ack was late): written already.
                continue;
            }
            heard = Instant::now();
            let i = got.index;
            if info.chunk_digests {
                let h = m.headers.as_ref();
                let index = h
                    .and_then(|h| h.get(layout::CHUNK_INDEX_HEADER))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                let digest = h
                    .and_then(|h| h.get(layout::CHUNK_DIGEST_HEADER))
                    .map(|v| v.as_str().to_string());
                let (Some(index), Some(digest)) = (index, digest) else {
                    return end(Err(FileError::Damaged(format!(
                        "chunk {i} of file {name} (stream seq {sseq}) has no index or digest header, which every chunk tape sends has: {}",
                        nowhere()
                    ))));
                };
                if index != i {
                    return end(Err(FileError::Damaged(format!(
                        "chunk {i} of file {name} is missing or out of place on the server (chunk {index} came where it belongs, stream seq {sseq}): {}",
                        nowhere()
                    ))));
                }
                if layout::digest_of(&m.payload) != digest {
                    return end(Err(FileError::Damaged(format!(
                        "chunk {i} of file {name} is damaged (stream seq {sseq}): its SHA-256 is not the one it was sent with: {}",
                        nowhere()
                    ))));
                }
            }
            if got.bytes + m.payload.len() as u64 > info.size {
                return end(Err(FileError::Damaged(format!(
                    "chunk {i} of file {name} goes past the {} bytes its record says: {}",
                    info.size,
                    nowhere()
                ))));
            }
            part.write(&m.payload)?;
            got.whole.update(&m.payload);
            got.bytes += m.payload.len() as u64;
            got.index += 1;
            got.last_sseq = sseq;
            // Acknowledging a chunk acknowledges all before it, and lets
            // the server send that many more.
            if got.index % ack_every == 0 || got.index == info.chunks {
                if let Some(r) = m.reply.clone() {
                    let _ = self
                        .rt
                        .block_on(c.publish(r, bytes::Bytes::from_static(b"+ACK")));
                }
            }
            progress(got.bytes, info.size);
            if got.index == info.chunks {
                return end(Ok(End::Done));
            }
        }
    }

    /// An ephemeral push consumer of `subj` after stream seq `after` (0:
    /// from the first) that sends at most `window` chunks ahead of the
    /// last one acknowledged (ack-all), with a 1 s heartbeat.
    async fn chunk_consumer(&self, subj: &str, inbox: &str, after: u64) -> Result<String, Fail> {
        let mut cfg = json!({
            "deliver_subject": inbox,
            "filter_subject": subj,
            "ack_policy": "all",
            "max_ack_pending": self.opts.window.max(1),
            "ack_wait": 60_000_000_000u64,
            "replay_policy": "instant",
            "idle_heartbeat": 1_000_000_000u64,
            "inactive_threshold": 10_000_000_000u64,
            "mem_storage": true,
            "num_replicas": 1,
        });
        if after == 0 {
            cfg["deliver_policy"] = json!("all");
        } else {
            cfg["deliver_policy"] = json!("by_start_sequence");
            cfg["opt_start_seq"] = json!(after + 1);
        }
        let body = json!({ "stream_name": self.stream, "config": cfg });
        match api::request(
            &self.conn.client,
            format!("$JS.API.CONSUMER.CREATE.{}", self.stream),
            &body,
        )
        .await?
        {
            Ok(v) => Ok(v["name"].as_str().unwrap_or_default().to_string()),
            Err(e) if e.err_code == api::STREAM_NOT_FOUND => Err(Fail::Fatal(format!(
                "the bucket {} (stream {}) went away",
                self.opts.bucket, self.stream
            ))),
            Err(e) => Err(Fail::Retry(format!(
                "cannot read the chunks of {subj}: {}",
                e.description
            ))),
        }
    }
}

/// The SHA-256 a record names, or why it cannot be checked.
fn digest_of_record(info: &ObjectInfo, name: &str) -> Result<Vec<u8>, FileError> {
    let d: Option<Vec<u8>> = (0..info.sha256.len() / 2)
        .map(|i| u8::from_str_radix(info.sha256.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    match d {
        Some(d) if d.len() == 32 => Ok(d),
        _ => Err(FileError::Damaged(format!(
            "the record of file {name} has no SHA-256 digest to check it with: send it again with tape"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects() {
        assert_eq!(
            sequences("$JS.ACK.OBJ_tape.c.1.42.7.1700000000000000000.3"),
            Some((42, 7))
        );
        assert_eq!(
            sequences("$JS.ACK.dom.hash.OBJ_tape.c.1.42.7.1700000000000000000.3.tok"),
            Some((42, 7))
        );
        assert_eq!(sequences("_INBOX.x"), None);
    }

    #[test]
    fn targets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        assert_eq!(target_of("a/b.csv", p).unwrap(), p.join("b.csv"));
        assert_eq!(target_of("b.csv", &p.join("x")).unwrap(), p.join("x"));
        assert!(target_of("b.csv", &p.join("nodir/x")).is_err());
        let slash = format!("{}/nodir/", p.display());
        assert!(target_of("b.csv", Path::new(&slash)).is_err());
        assert!(target_of("a/", p).is_err());
    }

    #[test]
    fn a_temporary_file_is_removed_unless_committed_and_locked_meanwhile() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("x.bin");
        let mut p = Part::create(&t).unwrap();
        p.write(b"abc").unwrap();
        assert!(d.path().join(".x.bin.tape-part").exists());
        let second = Part::create(&t);
        assert!(matches!(second, Err(FileError::Other(ref s)) if s.contains("another")));
        drop(p);
        assert!(!d.path().join(".x.bin.tape-part").exists());
        assert!(!t.exists());
        // A leftover is taken over, emptied, and renamed when committed.
        std::fs::write(d.path().join(".x.bin.tape-part"), b"old junk").unwrap();
        let mut p = Part::create(&t).unwrap();
        p.write(b"new").unwrap();
        p.commit(&t).unwrap();
        assert_eq!(std::fs::read(&t).unwrap(), b"new");
        assert!(!d.path().join(".x.bin.tape-part").exists());
    }
}
