//! `tape tail JOURNAL...`: print frames of one or more journals merged in
//! time order.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tape_reader::{Reader, ReaderFrame, ServiceMode, Start};

/// How long `tape tail --follow` waits with nothing new before it checks
/// whether a journal is stuck at damage.
const STALL_CHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest a quiet `tape tail --follow` goes between looks for damage.
const STALL_CHECK_MAX: Duration = Duration::from_secs(64);

/// Output format of `tape tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The payload and a newline.
    Text,
    /// One JSON object a line: journal, seq, time_ns, type, source, dest,
    /// corr (only when it is not 0), payload (UTF-8) or payload_hex.
    Json,
    /// The payload in lowercase hex and a newline.
    Hex,
}

/// Parses `--from`: `start`, `end`, `seq:N` or `time:RFC3339` (or
/// `time:NANOS`).
pub fn parse_from(s: &str) -> Result<Start, String> {
    match s {
        "start" => return Ok(Start::First),
        "end" => return Ok(Start::End),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("seq:") {
        return n
            .parse()
            .map(Start::Seq)
            .map_err(|_| format!("{n:?} is not a sequence number"));
    }
    if let Some(t) = s.strip_prefix("time:") {
        return crate::timefmt::parse_time(t).map(Start::Time);
    }
    Err(format!(
        "{s:?} is not a start position: use start, end, seq:N or time:RFC3339"
    ))
}

/// Options of `tape tail`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Where to start; `None` = `end` with `follow`, else `start`.
    pub from: Option<Start>,
    /// Keep printing new frames.
    pub follow: bool,
    /// Output format.
    pub format: Format,
    /// Check each frame's CRC32C and time order (the default of `tape
    /// tail`; `--no-check` turns it off).
    pub check: bool,
    /// Read as the resuming reader of this name (`--resume NAME`),
    /// committing each frame once its line is written to `out` and
    /// flushed.
    pub resume: Option<String>,
}

/// Prints the frames of `journals` (in `dir`) to `out`.
pub fn run(
    root: &Path,
    dir: &Path,
    journals: &[String],
    opts: &TailOptions,
    out: &mut dyn Write,
) -> Result<()> {
    let start = opts.from.unwrap_or(if opts.follow {
        Start::End
    } else {
        Start::First
    });
    if !opts.follow {
        // Before the reader is made: a resuming one would keep a position
        // on a journal that is not there.
        require_journals(dir, journals)?;
    }
    let name = match &opts.resume {
        Some(n) => n.clone(),
        None => format!("tape-tail-{}", std::process::id()),
    };
    let builder = Reader::builder(&name)
        .root(root)
        .start(start)
        .service(ServiceMode::IfRunning)
        .verify_crc(opts.check);
    let builder = if opts.resume.is_some() {
        builder.resume()
    } else {
        builder
    };
    let mut reader = builder.create()?;
    for j in journals {
        reader
            .add_journal(dir, j)
            .with_context(|| format!("cannot read journal {j}"))?;
    }
    let mut line = Vec::with_capacity(256);
    // Quiet for this long: look for damage (each look reads the rest of a
    // page, tens of ms for a large one).
    let mut stall_check = STALL_CHECK_EVERY;
    loop {
        match reader.next()? {
            Some(f) => {
                stall_check = STALL_CHECK_EVERY;
                line.clear();
                format_frame(&f, opts.format, &mut line);
                out.write_all(&line)?;
                if opts.resume.is_some() {
                    // Written (the write returned), then committed: a kill
                    // between the two prints this frame again next time.
                    out.flush()?;
                    reader.commit();
                }
            }
            None if !opts.follow => break,
            None => {
                // Asleep on the journals' doorbells until the next frame:
                // no CPU while nothing comes.
                out.flush()?;
                if !reader.wait(stall_check) {
                    // A journal quiet for a while may be stuck at damage.
                    reader.housekeeping();
                    reader.check_stalled()?;
                    // Looked once: from now on the writer's doorbell wakes
                    // this reader early for whatever it publishes where the
                    // reader cannot read (wait() is false then), so the
                    // periodic look is only a backstop.
                    stall_check = STALL_CHECK_MAX;
                }
            }
        }
    }
    out.flush()?;
    // The end of what is written, or damage that stops the journal early?
    reader.check_stalled()?;
    Ok(())
}

/// Fails, naming them, when journals of `journals` have no page in `dir`.
pub(crate) fn require_journals(dir: &Path, journals: &[String]) -> Result<()> {
    let missing: Vec<&str> = journals
        .iter()
        .filter(|j| tape_journal::list_pages(dir, j).map_or(true, |p| p.is_empty()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "journal {} not found in {}: check the name and --root",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(bytes: &[u8], out: &mut Vec<u8>) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Appends one frame, formatted, to `out`.
pub fn format_frame(f: &ReaderFrame<'_>, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Text => {
            out.extend_from_slice(f.payload());
            out.push(b'\n');
        }
        Format::Hex => {
            push_hex(f.payload(), out);
            out.push(b'\n');
        }
        Format::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("journal".into(), f.journal_name.into());
            obj.insert("seq".into(), f.seq().into());
            obj.insert("time_ns".into(), f.time_ns().into());
            obj.insert("type".into(), f.msg_type().into());
            obj.insert("source".into(), f.source().into());
            obj.insert("dest".into(), f.dest().into());
            if f.corr() != 0 {
                obj.insert("corr".into(), f.corr().into());
            }
            match std::str::from_utf8(f.payload()) {
                Ok(s) => {
                    obj.insert("payload".into(), s.into());
                }
                Err(_) => {
                    let mut h = Vec::with_capacity(f.payload().len() * 2);
                    push_hex(f.payload(), &mut h);
                    obj.insert(
                        "payload_hex".into(),
                        String::from_utf8(h).expect("hex is ascii").into(),
                    );
                }
            }
            serde_json::to_writer(&mut *out, &obj).expect("writing to a Vec cannot fail");
            out.push(b'\n');
        }
    }
}
