//! The mirror: every change of a bucket's variables as one frame of the
//! local journal `var.<bucket>`, so a strategy reads them from shared
//! memory, merged in time order with its market data.

use super::{check_pattern, other, Change, Entry, VarError, Vars, VarsOptions, MIRROR_MSG_TYPE};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Options of [`mirror()`].
#[derive(Clone)]
pub struct MirrorOptions {
    /// The bucket and server.
    pub vars: VarsOptions,
    /// The local root whose service the journal `var.<bucket>` is written
    /// through.
    pub root: PathBuf,
    /// Which variables (`>`: all).
    pub pattern: String,
    /// Called once the mirror follows the bucket.
    pub ready: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for MirrorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorOptions")
            .field("vars", &self.vars)
            .field("root", &self.root)
            .field("pattern", &self.pattern)
            .finish()
    }
}

/// The journal [`mirror`] writes for `bucket`.
pub fn mirror_journal(bucket: &str) -> String {
    format!("var.{bucket}")
}

/// The last revision held by the mirror journal in `root` (0 when empty).
fn mirrored_revision(root: &Path, journal: &str, next_seq: u64) -> Result<u64, VarError> {
    if next_seq <= 1 {
        return Ok(0);
    }
    let dir = tape_journal::journal_dir(root);
    let mut c = tape_journal::Cursor::open(
        &dir,
        journal,
        tape_journal::Start::Seq(next_seq - 1),
        Default::default(),
    )
    .map_err(|e| other(format!("cannot read the journal {journal}: {e}")))?;
    match c.next() {
        Ok(Some(f)) => Ok(f.corr()),
        Ok(None) => Ok(0),
        Err(e) => Err(other(format!("cannot read the journal {journal}: {e}"))),
    }
}

/// Writes every change of the bucket's variables matching the pattern to
/// the local journal `var.<bucket>` (one frame each: `corr` = revision,
/// payload = the [`Change`] as JSON, type [`MIRROR_MSG_TYPE`]), until
/// `stop`. A new journal starts with the current value of each variable;
/// a journal that exists resumes after the last revision it holds.
pub fn mirror(opts: &MirrorOptions, stop: &AtomicBool) -> Result<(), VarError> {
    check_pattern(&opts.pattern)?;
    let journal = mirror_journal(&opts.vars.bucket);
    // The server first: refused credentials leave no journal behind.
    let vars = Vars::open(opts.vars.clone())?;
    let mut w = tape_writer::Writer::builder(&journal)
        .root(&opts.root)
        .page_size(1 << 20)
        .create()
        .map_err(|e| {
            other(format!(
                "cannot write the journal {journal} in {}: {e}",
                opts.root.display()
            ))
        })?;
    let from = mirrored_revision(&opts.root, &journal, w.next_seq())?;
    let mut write = |ch: &Change| -> Result<bool, VarError> {
        let payload = serde_json::to_vec(ch).unwrap_or_default();
        let meta = tape_journal::FrameMeta {
            msg_type: MIRROR_MSG_TYPE,
            source: 0,
            dest: 0,
            corr: ch.revision,
        };
        w.write_meta(&meta, &payload)
            .map_err(|e| other(format!("cannot append to the journal {journal}: {e}")))?;
        Ok(true)
    };
    let mut start = from;
    if from == 0 {
        // A new journal: the current values first, then every change after.
        // The bucket's end is read before the listing; values the listing
        // shows past it come again from the watch, in order, so they are
        // left out here: the journal's revisions only ever increase.
        let end = vars.last_revision()?;
        let now = vars.list(&opts.pattern)?;
        let mut ents: Vec<&Entry> = now.iter().filter(|e| e.revision <= end).collect();
        ents.sort_by_key(|e| e.revision);
        for e in ents {
            write(&Change {
                name: e.name.clone(),
                op: "put".into(),
                value: e.value.clone(),
                revision: e.revision,
                time_ns: e.time_ns,
            })?;
        }
        start = end;
    }
    let ready = opts.ready.clone();
    vars.watch(
        &opts.pattern,
        Some(start),
        stop,
        &mut || ready(),
        &mut write,
    )
}
