//! `tape file`: files across machines, in a JetStream object store (the
//! library is `tape_nats::files`).

use super::nats::ServerArgs;
use anyhow::Result;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tape_nats::{files, Files, FilesOptions};

/// The subcommands of `tape file`.
#[derive(Debug, clap::Subcommand)]
pub enum FileCommand {
    /// Send a file to the bucket, replacing the file of that name once all
    /// of it is on the server.
    ///
    /// Chunks of 128 KiB, each with its own SHA-256, pipelined; the
    /// record naming them (size, chunks, SHA-256 of the whole) is
    /// published last, so a receiver never sees a half-sent file. Prints
    /// name, size, chunks and SHA-256 when done.
    Send {
        /// The file to send.
        path: PathBuf,
        /// Its name in the bucket (default: the file's name).
        #[arg(long, value_name = "N")]
        name: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Receive a file: written to a temporary name beside PATH, checked
    /// chunk by chunk and as a whole (SHA-256), renamed to PATH only when
    /// it matches; exit 3 when there is no such file.
    ///
    /// A refused or interrupted receive leaves nothing at PATH (a file
    /// that was there stays as it was).
    Recv {
        /// Name in the bucket.
        name: String,
        /// Where to write it: a file, or a folder to write it in (default:
        /// the current folder, under the name's last /-separated part).
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// List the files of the bucket: name, size, chunks, SHA-256, when
    /// sent (one JSON object a line with --json).
    Ls {
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a file from the bucket (its record, then its chunks); exit 3
    /// when there is no such file.
    Rm {
        /// Name in the bucket.
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Bucket, server and credentials, and how long to keep trying.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Bucket of files (a JetStream object store, stream OBJ_<B>).
    #[arg(long, value_name = "B", default_value = files::DEFAULT_BUCKET)]
    pub bucket: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Give up after this many seconds of server away or silent.
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub timeout: u64,
}

impl Common {
    fn open(&self) -> Result<Files> {
        let mut o = FilesOptions::new(self.server.server()?);
        o.bucket = self.bucket.clone();
        o.timeout = Duration::from_secs(self.timeout.max(1));
        o.log = tape_nats::stderr_log("tape file");
        Ok(Files::open(o)?)
    }
}

/// A progress line on standard error, only when it is a terminal: bytes,
/// percent, MB/s, redrawn at most 10 times a second.
#[derive(Debug)]
pub struct Bar {
    what: String,
    on: bool,
    start: Instant,
    drawn: Option<Instant>,
}

impl Bar {
    /// A bar labelled `what`, drawn when stderr is a terminal.
    pub fn new(what: &str) -> Bar {
        Bar {
            what: what.to_string(),
            on: std::io::stderr().is_terminal(),
            start: Instant::now(),
            drawn: None,
        }
    }

    /// Shows `done` of `total` bytes.
    pub fn update(&mut self, done: u64, total: u64) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        if self
            .drawn
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
            && done < total
        {
            return;
        }
        self.drawn = Some(now);
        let line = line(&self.what, done, total, now.duration_since(self.start));
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{line}\x1b[K");
        let _ = e.flush();
    }

    /// Ends the line.
    pub fn finish(&mut self) {
        if self.on && self.drawn.is_some() {
            eprintln!();
        }
        self.drawn = None;
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `what  12.0/200.0 MiB   6%  85.3 MB/s`.
pub fn line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let pct = (done.min(total) * 100).checked_div(total).unwrap_or(100);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        done as f64 / secs / 1e6
    } else {
        0.0
    };
    format!(
        "{what}  {:.1}/{:.1} MiB  {pct:3}%  {rate:.1} MB/s",
        done as f64 / MIB,
        total as f64 / MIB
    )
}

fn name_of(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no file name to send it under: give --name N",
                path.display()
            )
        })
}

/// Runs a `tape file` subcommand.
pub fn run(cmd: FileCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        FileCommand::Send { path, name, common } => {
            let name = match name {
                Some(n) => n,
                None => name_of(&path)?,
            };
            let files = common.open()?;
            let mut bar = Bar::new(&format!("send {name}"));
            let info = files.send(&path, &name, &mut |d, t| bar.update(d, t))?;
            bar.finish();
            writeln!(
                out,
                "sent {} ({} bytes, {} chunks, sha256 {})",
                info.name, info.size, info.chunks, info.sha256
            )?;
        }
        FileCommand::Recv {
            name,
            output,
            common,
        } => {
            let files = common.open()?;
            let out_path = output.unwrap_or_else(|| PathBuf::from("."));
            let mut bar = Bar::new(&format!("recv {name}"));
            let (info, path) = files.recv(&name, &out_path, &mut |d, t| bar.update(d, t))?;
            bar.finish();
            writeln!(
                out,
                "received {} into {} ({} bytes, sha256 {})",
                info.name,
                path.display(),
                info.size,
                info.sha256
            )?;
        }
        FileCommand::Ls { json, common } => {
            for i in common.open()?.list()? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&i)?)?;
                } else {
                    writeln!(
                        out,
                        "{}  {}  {}  {}  {}",
                        i.name, i.size, i.chunks, i.sha256, i.modified
                    )?;
                }
            }
        }
        FileCommand::Rm { name, common } => {
            let old = common.open()?.remove(&name)?;
            writeln!(out, "removed {} ({} bytes)", old.name, old.size)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_says_bytes_percent_and_rate() {
        let l = line("send a", 50 << 20, 200 << 20, Duration::from_millis(500));
        assert_eq!(l, "send a  50.0/200.0 MiB   25%  104.9 MB/s");
        assert!(line("x", 0, 0, Duration::ZERO).contains("100%"));
    }
}
