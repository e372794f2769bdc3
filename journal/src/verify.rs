//! `verify`: walk every page and frame of a journal and report the first
//! damage with its file and offset.

use crate::files::page_path;
use crate::format::PAGE_HEADER_LEN;
use crate::locate::{pages, OpenError};
use crate::page::PageRef;
use crate::scan::{nonzero_end, scan_page, Damage, ScanCheck};
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
pub fn verify(dir: &Path, name: &str) -> Result<VerifyReport, OpenError> {
    let pages = pages(dir, name)?;
    let mut report = VerifyReport::default();
    let mut check = ScanCheck {
        crc: true,
        ..ScanCheck::default()
    };
    let last_no = *pages.numbers.last().expect("at least one page");
    let mut ended_prev = true;
    let mut prev_tail = PAGE_HEADER_LEN;
    for &no in &pages.numbers {
        let page = PageRef::open(dir, name, no, Some(pages.page_size), false)?;
        if !ended_prev && crate::locate::first_frame(&page).is_some() {
            // The page before this one stops (a zero length word) without an
            // end-of-page marker, yet this one has frames: readers would
            // never get here. The damage is where the page before stops.
            return Err(Damage::new(
                &page_path(dir, name, no - 1),
                prev_tail,
                "frames stop here without an end-of-page marker but the next page has frames",
            )
            .into());
        }
        let scan = scan_page(page.bytes(), page.path(), check)?;
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
        ended_prev = scan.ended || no == last_no;
        prev_tail = scan.tail;
    }
    Ok(report)
}
