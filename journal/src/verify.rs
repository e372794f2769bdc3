//! `verify`: walk every page and frame of a journal and report the first
//! damage with its file and offset.

use crate::locate::{pages, OpenError};
use crate::page::PageRef;
use crate::scan::{
    hole_damage, nonzero_end, published_past_hole, scan_page, Damage, ScanCheck,
};
use std::path::Path;

/// What a clean verify found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Page files checked.
    pub pages: u64,
    /// Frames checked.
    pub frames: u64,
    /// Payload bytes checked.
    pub payload_bytes: u64,
    /// Sequence number of the first frame, 0 when none.
    pub first_seq: u64,
    /// Sequence number of the last frame, 0 when none.
    pub last_seq: u64,
    /// Things that are not damage but worth saying (bytes a crashed writer
    /// left past the last frame, which its successor clears).
    pub notes: Vec<String>,
}

/// Checks every page header and every frame of journal `name` in `dir`:
/// lengths inside the page, sequence numbers contiguous across pages, write
/// times that never go back, every payload's CRC32C, and an end-of-page
/// marker on every page but the last. Damage is reported as
/// [`OpenError::Damaged`] (file and offset) or [`OpenError::Page`] (a bad
/// page header, naming the file).
///
/// Where frames stop without an end-of-page marker, the bytes after them
/// are also checked for frames published past a hole of zeros (FORMAT.md,
/// "Holes"), which is damage; other bytes there are a note.
pub fn verify(dir: &Path, name: &str) -> Result<VerifyReport, OpenError> {
    crate::locate::retry_pruned(|| verify_once(dir, name))
}

fn verify_once(dir: &Path, name: &str) -> Result<VerifyReport, OpenError> {
    let pages = pages(dir, name)?;
    let mut report = VerifyReport::default();
    let mut check = ScanCheck {
        crc: true,
        ..ScanCheck::default()
    };
    // Where frames stopped without an end-of-page marker: pages after it
    // must have no frame.
    let mut stopped: Option<(std::path::PathBuf, usize)> = None;
    for &no in &pages.numbers {
        let page = PageRef::open(dir, name, no, Some(pages.page_size), false)?;
        if let Some((file, at)) = &stopped {
            if crate::locate::first_frame(&page).is_some() {
                // Readers would never get here.
                return Err(Damage::new(
                    file,
                    *at,
                    "frames stop here without an end-of-page marker but a later page has frames",
                )
                .into());
            }
        }
        let scan = scan_page(page.bytes(), page.path(), check)?;
        if !scan.ended {
            // Bounded as recovery bounds it in the page where frames stop;
            // in a page after that no writer wrote, so any frame counts.
            let bounded = stopped.is_none();
            let (next, min) = match scan.last {
                Some((s, t)) => (Some(s + 1), Some(t)),
                None => (check.expect_seq, check.min_time),
            };
            let past = published_past_hole(page.bytes(), scan.tail, next, min, bounded);
            let here = stopped.get_or_insert_with(|| (page.path().to_path_buf(), scan.tail));
            if let Some(past) = past {
                return Err(hole_damage(&here.0, here.1, past).into());
            }
        }
        if let Some((first, _)) = scan.first {
            if report.first_seq == 0 {
                report.first_seq = first;
            }
        }
        if let Some((seq, time)) = scan.last {
            report.last_seq = seq;
            check.expect_seq = Some(seq + 1);
            check.min_time = Some(time);
        }
        report.frames += scan.frames;
        report.payload_bytes += scan.payload_bytes;
        report.pages += 1;
        if !scan.ended {
            let dirty = nonzero_end(page.bytes(), scan.tail);
            if dirty > scan.tail {
                report.notes.push(format!(
                    "{}: {} bytes after the last frame at offset {} were never published (a writer was cut off; the next writer clears them)",
                    page.path().display(),
                    dirty - scan.tail,
                    scan.tail
                ));
            }
        }
    }
    Ok(report)
}
