//! `tape var`: shared variables across machines, in a JetStream key-value
//! bucket (the library is `tape_nats::vars`).

use super::nats::ServerArgs;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tape_nats::{vars, MirrorOptions, VarError, Vars, VarsOptions};

/// The subcommands of `tape var`.
#[derive(Debug, clap::Subcommand)]
pub enum VarCommand {
    /// Set a variable to a JSON value.
    Put {
        /// Variable name: words of A-Z a-z 0-9 _ - / = separated by dots.
        name: String,
        /// The value, as JSON (a string needs its quotes: '"text"').
        #[arg(allow_hyphen_values = true)]
        json: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print a variable's value as JSON; exit 3 when it does not exist.
    Get {
        /// Variable name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete a variable; exit 3 when it does not exist.
    Del {
        /// Variable name.
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// List the variables: NAME and value a line (one JSON object a line
    /// with --json: name, value, revision, time_ns).
    Ls {
        /// Which: dot-separated words, * for any one word, > at the end
        /// for the rest (default: all).
        pattern: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print every change from now on, one JSON object a line (name, op,
    /// value, revision, time_ns), until SIGINT or SIGTERM.
    ///
    /// Changes come once each, in revision order, also across a server
    /// restart. "watching" is printed on stderr once it follows the
    /// bucket.
    Watch {
        /// Which variables (default: all).
        pattern: Option<String>,
        /// Start after this revision instead of now.
        #[arg(long, value_name = "REV")]
        after: Option<u64>,
        #[command(flatten)]
        common: Common,
    },
    /// Write every change to the local journal var.<bucket> (one frame
    /// each: corr = revision, payload = the change as watch prints it),
    /// until SIGINT or SIGTERM.
    ///
    /// Needs this root's `tape service`. A new journal starts with the
    /// current value of every variable; one that exists resumes after the
    /// last revision it holds. Strategies read it like any journal,
    /// merged in time order with their market data.
    Mirror {
        /// Which variables (default: all).
        pattern: Option<String>,
        /// Root folder (default: $TAPE_ROOT, else /tmp/trading).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Set KEY of the object NAME (made {} when missing), atomically.
    DictSet {
        /// Variable name.
        name: String,
        /// Key in the object.
        key: String,
        /// The value, as JSON.
        #[arg(allow_hyphen_values = true)]
        json: String,
        #[command(flatten)]
        common: Common,
    },
    /// Remove KEY of the object NAME, atomically, printing its value;
    /// exit 3 when it is not there.
    DictDel {
        /// Variable name.
        name: String,
        /// Key in the object.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Append a JSON value to the list NAME (made [] when missing),
    /// atomically: pushes from many processes and machines all land.
    ListPush {
        /// Variable name.
        name: String,
        /// The item, as JSON.
        #[arg(allow_hyphen_values = true)]
        json: String,
        #[command(flatten)]
        common: Common,
    },
    /// Remove and print item INDEX of the list NAME (default: the last;
    /// negative counts from the end), atomically; exit 3 when it is empty.
    ListPop {
        /// Variable name.
        name: String,
        /// Which item: 0 the first, -1 the last.
        #[arg(allow_hyphen_values = true)]
        index: Option<i64>,
        #[command(flatten)]
        common: Common,
    },
    /// Remove the first item equal to JSON from the list NAME, atomically;
    /// exit 3 when there is none.
    ListRemove {
        /// Variable name.
        name: String,
        /// The item, as JSON.
        #[arg(allow_hyphen_values = true)]
        json: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Bucket, server and credentials, and how long to keep retrying.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Bucket of variables (a JetStream key-value bucket, stream KV_<B>).
    #[arg(long, value_name = "B", default_value = vars::DEFAULT_BUCKET)]
    pub bucket: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Give up an operation after this many seconds of server away or
    /// conflicts (at most 100: within the server's 2-minute memory of an
    /// operation's id).
    #[arg(long, value_name = "S", default_value_t = 30)]
    pub timeout: u64,
}

impl Common {
    fn options(&self, log: bool) -> Result<VarsOptions> {
        let mut o = VarsOptions::new(self.server.server()?);
        o.bucket = self.bucket.clone();
        o.timeout = std::time::Duration::from_secs(self.timeout.max(1));
        if log {
            o.log = tape_nats::stderr_log("tape var");
        }
        Ok(o)
    }

    fn open(&self) -> Result<Vars> {
        Ok(Vars::open(self.options(false)?)?)
    }
}

fn json_arg(what: &str, s: &str) -> Result<Value> {
    serde_json::from_str(s).with_context(|| {
        format!("{what} {s:?} is not JSON: quote strings ('\"text\"'), e.g. 42, true, [1,2], {{\"a\":1}}")
    })
}

/// Runs a `tape var` subcommand.
pub fn run(cmd: VarCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        VarCommand::Put { name, json, common } => {
            let v = json_arg("the value", &json)?;
            common.open()?.put(&name, &v)?;
        }
        VarCommand::Get { name, common } => match common.open()?.get(&name)? {
            Some(e) => writeln!(out, "{}", e.value)?,
            None => return Err(VarError::Missing(format!("there is no variable {name}")).into()),
        },
        VarCommand::Del { name, common } => {
            common.open()?.del(&name)?;
        }
        VarCommand::Ls {
            pattern,
            json,
            common,
        } => {
            let all = common.open()?.list(pattern.as_deref().unwrap_or(">"))?;
            for e in all {
                if json {
                    let o = serde_json::json!({
                        "name": e.name, "value": e.value,
                        "revision": e.revision, "time_ns": e.time_ns,
                    });
                    writeln!(out, "{o}")?;
                } else {
                    writeln!(out, "{} {}", e.name, e.value)?;
                }
            }
        }
        VarCommand::Watch {
            pattern,
            after,
            common,
        } => {
            let stop = tape_service::shutdown_on_signals()?;
            let vars = Vars::open(common.options(true)?)?;
            let mut said = false;
            vars.watch(
                pattern.as_deref().unwrap_or(">"),
                after,
                stop,
                &mut || {
                    if !said {
                        eprintln!("tape var: watching bucket {}", common.bucket);
                        said = true;
                    }
                },
                &mut |ch| {
                    let line = serde_json::to_string(ch).unwrap_or_default();
                    match writeln!(out, "{line}").and_then(|_| out.flush()) {
                        Ok(()) => Ok(true),
                        // Nobody reads any more: stop quietly.
                        Err(_) => Ok(false),
                    }
                },
            )?;
        }
        VarCommand::Mirror {
            pattern,
            root,
            common,
        } => {
            let stop = tape_service::shutdown_on_signals()?;
            let root = tape_journal::resolve_root(root.as_deref());
            let bucket = common.bucket.clone();
            let opts = MirrorOptions {
                vars: common.options(true)?,
                root,
                pattern: pattern.unwrap_or_else(|| ">".into()),
                ready: Arc::new(move || {
                    eprintln!(
                        "tape var: mirroring bucket {bucket} into journal {}",
                        vars::mirror_journal(&bucket)
                    )
                }),
            };
            tape_nats::mirror(&opts, stop)?;
        }
        VarCommand::DictSet {
            name,
            key,
            json,
            common,
        } => {
            let v = json_arg("the value", &json)?;
            common.open()?.dict_set(&name, &key, &v)?;
        }
        VarCommand::DictDel { name, key, common } => {
            let old = common.open()?.dict_del(&name, &key)?;
            writeln!(out, "{old}")?;
        }
        VarCommand::ListPush { name, json, common } => {
            let v = json_arg("the item", &json)?;
            common.open()?.list_push(&name, &v)?;
        }
        VarCommand::ListPop {
            name,
            index,
            common,
        } => {
            let item = common.open()?.list_pop(&name, index)?;
            writeln!(out, "{item}")?;
        }
        VarCommand::ListRemove { name, json, common } => {
            let v = json_arg("the item", &json)?;
            common.open()?.list_remove(&name, &v)?;
        }
    }
    Ok(())
}
