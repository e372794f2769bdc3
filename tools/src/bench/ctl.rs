//! The control block the bench processes share: a few cache lines of a
//! mapped file, for barriers, the floor's clock line and progress.

use anyhow::{Context, Result};
use memmap2::MmapMut;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

/// Cache lines of the control block.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
pub enum Line {
    /// Processes that are ready (count).
    Ready = 0,
    /// Set to 1 by the writer after its last frame.
    Done = 1,
    /// The floor writer's latest clock reading.
    Floor = 2,
    /// Frames written so far (updated every few thousand).
    Progress = 3,
    /// The ping-pong floor's line from side A to side B.
    Ping = 4,
    /// The ping-pong floor's line back.
    Pong = 5,
}

const LINES: usize = 8;
const LINE: usize = 128;

/// A mapped control block.
#[derive(Debug)]
pub struct Ctl {
    map: MmapMut,
}

impl Ctl {
    /// Creates (zeroed) or opens the control file at `path` and maps it.
    pub fn open(path: &Path, create: bool) -> Result<Ctl> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.set_len((LINES * LINE) as u64)?;
        // SAFETY: the file is LINES * LINE bytes long (set above) and only
        // the bench's own processes map it; every access is atomic.
        let map = unsafe { MmapMut::map_mut(&file) }?;
        Ok(Ctl { map })
    }

    /// The atomic at the start of line `l`.
    #[inline(always)]
    pub fn line(&self, l: Line) -> &AtomicI64 {
        let off = l as usize * LINE;
        assert!(off + 8 <= self.map.len());
        // SAFETY: off is inside the mapping and 128-aligned (the mapping is
        // page-aligned); all processes access these words only atomically.
        unsafe { AtomicI64::from_ptr(self.map.as_ptr().add(off) as *mut i64) }
    }

    /// Reads line `l`.
    #[inline(always)]
    pub fn get(&self, l: Line) -> i64 {
        self.line(l).load(Ordering::Acquire)
    }

    /// Writes line `l`.
    #[inline(always)]
    pub fn set(&self, l: Line, v: i64) {
        self.line(l).store(v, Ordering::Release)
    }

    /// Waits (sleeping, off any hot path) until line `l` is at least `v`.
    pub fn wait_at_least(&self, l: Line, v: i64, deadline: std::time::Instant) -> Result<()> {
        while self.get(l) < v {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("a bench process did not get ready in time");
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        Ok(())
    }
}
