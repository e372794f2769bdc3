//! `verify`: walk every page and frame of a journal and report the first
//! damage with its file and offset.

use crate::files::page_path;
use crate::format::{
    Geometry, MAX_PAGE_SIZE_OFFSET, PAGE_FLAGS_OFFSET, PAGE_FLAG_FIRST_SEQ_ANY, PAGE_HEADER_LEN,
    VERSION_1,
};
use crate::locate::{
    check_first_seq, missing_next_damage, no_frame_damage, page_flags, pages, OpenError,
};
use crate::page::{PageError, PageRef};
use crate::scan::{
    first_nonzero, hole_damage, nonzero_end, published_past_hole, scan_page, Damage, ScanCheck,
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
    /// The journal's format version (every page has the same; 1: pages
    /// of one size, written before pages grew) and largest page size.
    pub geometry: Option<Geometry>,
    /// Pages skipped as too small for the frame after them (an
    /// end-of-page marker at offset 64).
    pub skipped_pages: u64,
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
/// "Holes"), which is damage; other bytes there are a note (a writer cut
/// off while it wrote a frame leaves them; the next writer zeroes them).
///
/// Also damage (FORMAT.md, "What a reader checks"): a byte that is not
/// zero where the format says zero (a page header's reserved bytes, a
/// frame's padding, anything after an end-of-page marker, a page after
/// the tail past its header); an end-of-page marker whose next page file
/// is missing; a first frame that breaks the rule of the first sequence
/// number; a first page on disk above 1 with no frame in the journal.
///
/// A journal that a writer appends to meanwhile is verified as far as it
/// was written when each page was read (verify starts over, up to 100
/// times, when the writer moved past where frames seemed to stop).
pub fn verify(dir: &Path, name: &str) -> Result<VerifyReport, OpenError> {
    for _ in 0..100 {
        if let Some(mut report) = crate::locate::retry_pruned(|| verify_once(dir, name))? {
            // Names that look like pages but are not (FORMAT.md, "Files").
            for f in crate::files::foreign_page_files(dir, name).unwrap_or_default() {
                report.notes.push(format!(
                    "{}: not a page of {name} (a page file is named {name}.<page number, zero-padded to 8 digits>.journal), ignored",
                    dir.join(f).display()
                ));
            }
            return Ok(report);
        }
    }
    Err(OpenError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(
            "the journal changed under every attempt to verify it: try again",
        ),
    })
}

/// One pass; `None` when a live writer moved past the place where frames
/// seemed to stop, so that what was read of later pages does not tell.
fn verify_once(dir: &Path, name: &str) -> Result<Option<VerifyReport>, OpenError> {
    let pages = pages(dir, name)?;
    let mut report = VerifyReport::default();
    let mut check = ScanCheck {
        crc: true,
        zeros: true,
        ..ScanCheck::default()
    };
    // Where frames stopped without an end-of-page marker (the tail): pages
    // after it must have no frame, and nothing but zeros past their header.
    let mut stopped: Option<(PageRef, usize)> = None;
    // Whether the length word where frames stopped is still 0 (read after
    // an Acquire load of a later frame's length word, it tells whether a
    // live writer has moved on since).
    let still = |stopped: &Option<(PageRef, usize)>| {
        stopped
            .as_ref()
            .is_none_or(|(p, at)| crate::publish::load_len(p.bytes(), *at) == 0)
    };
    // The last page's end-of-page marker, if it has one.
    let mut ended_at: Option<(u64, usize)> = None;
    let geo = pages.geometry;
    report.geometry = Some(geo);
    // The size of the page before (FORMAT.md, "Page sizes").
    let mut before: Option<u64> = None;
    for &no in &pages.numbers {
        let page = PageRef::open(dir, name, no, Some(geo), false)?;
        check_reserved(&page, geo)?;
        check_size(&page, geo, before)?;
        before = Some(page.size());
        if let Some((file, at)) = &stopped {
            // A frame, or an end-of-page marker, where the page begins.
            if crate::publish::load_len(page.bytes(), PAGE_HEADER_LEN) != 0 {
                if !still(&stopped) {
                    return Ok(None);
                }
                // Readers would never get here.
                return Err(Damage::new(
                    file.path(),
                    *at,
                    "frames stop here without an end-of-page marker but a later page has frames",
                )
                .into());
            }
        }
        let scan = scan_page(page.bytes(), page.path(), check)?;
        ended_at = scan.ended.then_some((no, scan.tail));
        if scan.ended && scan.frames == 0 {
            report.skipped_pages += 1;
        }
        if !scan.ended {
            // Bounded as recovery bounds it in the page where frames stop;
            // in a page after that no writer wrote, so any frame counts.
            let bounded = stopped.is_none();
            let (next, min) = match scan.last {
                Some((s, t)) => (Some(s + 1), Some(t)),
                None => (check.expect_seq, check.min_time),
            };
            let past = published_past_hole(page.bytes(), scan.tail, next, min, bounded);
            if let Some(past) = past {
                if !still(&stopped) {
                    return Ok(None);
                }
                let (file, at) = match &stopped {
                    Some((p, at)) => (p.path(), *at),
                    None => (page.path(), scan.tail),
                };
                return Err(hole_damage(file, at, past).into());
            }
        }
        if let Some((first, _)) = scan.first {
            if report.first_seq == 0 {
                report.first_seq = first;
                // The rule is about the first page on disk, which holds no
                // frame when it was skipped as too small for this one.
                if no == pages.numbers[0] {
                    check_first_seq(&page, first)?;
                } else {
                    let first_page = PageRef::open(dir, name, pages.numbers[0], Some(geo), false)?;
                    check_first_seq(&first_page, first)?;
                }
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
            if stopped.is_none() {
                // The tail page: what a writer cut off while it wrote its
                // next frame leaves; recovery zeroes it.
                if dirty > scan.tail {
                    report.notes.push(format!(
                        "{}: {} bytes after the last frame at offset {} were never published (a writer was cut off; the next writer clears them)",
                        page.path().display(),
                        dirty - scan.tail,
                        scan.tail
                    ));
                }
                stopped = Some((page, scan.tail));
            } else if dirty > scan.tail {
                // A page after the tail page: no writer has written there.
                if !still(&stopped) {
                    return Ok(None);
                }
                let at = first_nonzero(page.bytes(), scan.tail).expect("a byte is not 0");
                return Err(Damage::new(
                    page.path(),
                    at,
                    format!(
                        "a byte that is not zero in a page after the last frame, where no writer has written ({} bytes up to offset {dirty}; a writer opening the journal zeroes them)",
                        dirty - at
                    ),
                )
                .into());
            }
        }
    }
    if let Some((no, at)) = ended_at {
        // The writer makes the next page before it writes the marker: if it
        // is not in the listing, it was made since (list again) or deleted.
        if !page_path(dir, name, no + 1).exists() {
            let last = (report.last_seq != 0).then_some(report.last_seq);
            let file = page_path(dir, name, no);
            return Err(missing_next_damage(dir, name, &file, no, at, last).into());
        }
        return Ok(None);
    }
    if report.frames == 0 && pages.numbers[0] > 1 {
        return Err(no_frame_damage(dir, name, pages.numbers[0]).into());
    }
    Ok(Some(report))
}

/// A page's size follows the rule of FORMAT.md, "Page sizes": page 1 at
/// least the first page size, every next page at least twice the one
/// before (at most the largest, which opening checked), all the same in
/// version 1 (opening checked that too).
fn check_size(page: &PageRef, geo: Geometry, before: Option<u64>) -> Result<(), PageError> {
    let size = page.size();
    let least = match before {
        Some(b) => geo.next_page_size(b),
        None if page.page_no() == 1 => geo.first_page_size(),
        // The first page on disk after pruning: any size.
        None => return Ok(()),
    };
    if size >= least {
        return Ok(());
    }
    Err(PageError::BadHeader {
        path: page.path().to_path_buf(),
        what: match before {
            Some(b) => format!(
                "page_size {size} is less than twice the page before's ({b}) and less than the journal's largest ({}): pages only grow",
                geo.max_page_size
            ),
            None => format!("page_size {size} of page 1 is less than the first page size {least}"),
        },
    })
}

/// The page header's reserved bytes (56 to 63; 48 to 63 in version 1) and
/// the `flags` bits other than bit 0 are zero.
fn check_reserved(page: &PageRef, geo: Geometry) -> Result<(), Damage> {
    let flags = page_flags(page.bytes());
    if flags & !PAGE_FLAG_FIRST_SEQ_ANY != 0 {
        return Err(Damage::new(
            page.path(),
            PAGE_FLAGS_OFFSET,
            format!("page header flags {flags:#x}: only bit 0 is defined, the others are 0"),
        ));
    }
    let from = if geo.version == VERSION_1 {
        MAX_PAGE_SIZE_OFFSET
    } else {
        MAX_PAGE_SIZE_OFFSET + 8
    };
    if let Some(at) = first_nonzero(&page.bytes()[..PAGE_HEADER_LEN], from) {
        return Err(Damage::new(
            page.path(),
            at,
            "a reserved byte of the page header is not zero",
        ));
    }
    Ok(())
}
