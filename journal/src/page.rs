//! Page files: creating, validating and mapping them.
//!
//! ## Safety of the mappings
//!
//! A page is mapped shared, so its bytes can change under us: the writer
//! appends to a page that readers have mapped. Only the frame protocol
//! (see [`crate::format::FrameHeader::len`]) makes that sound: a byte of a
//! frame is read only after an Acquire-ordered load of its non-zero `len`
//! (both sides of that word are in the crate's `publish.rs`), and the
//! writer never changes a published frame. The one risk no protocol can
//! cover is the file being shortened while mapped (someone truncating or
//! deleting part of it by hand): the kernel then raises SIGBUS on access.
//! Pages are checked to be full size before they are mapped, and tape never
//! truncates a page file; do not edit journal files by hand while a process
//! has them open.
//!
//! ## Page locks
//!
//! Every process that maps a page, readers and the writer alike, holds a
//! shared `flock` on it for as long as it has it mapped ([`PageRef`] and
//! [`PageMut`] keep the file open for that). `prune` deletes a page only
//! after taking an exclusive `flock` on it without waiting, so a page that
//! anyone reads or writes is never deleted, and the kernel drops the locks
//! of a process that dies, however it dies. A page that was deleted between
//! listing and opening (its link count is 0 once the shared lock is held) is
//! reported as not found, so callers list the pages again.

use crate::files::{page_path, page_tmp_path};
use crate::format::{Geometry, PageHeader, MAGIC, PAGE_HEADER_LEN, VERSION, VERSION_1};
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long opening a page waits for a pruner that holds the page's
/// exclusive lock (it holds it only between locking and unlinking).
const PRUNE_WAIT: Duration = Duration::from_secs(2);

/// A page file that cannot be used, naming the file.
#[derive(Debug)]
pub enum PageError {
    /// The file could not be created, opened, sized or mapped.
    Io {
        /// The page file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is shorter than its header says (or than a header).
    Truncated {
        /// The page file.
        path: PathBuf,
        /// Its length on disk.
        len: u64,
        /// The length it should have.
        expected: u64,
    },
    /// The file does not start with the tape magic.
    BadMagic {
        /// The page file.
        path: PathBuf,
    },
    /// The file was written by another format version.
    BadVersion {
        /// The page file.
        path: PathBuf,
        /// The version it carries.
        version: u32,
    },
    /// A header field is out of range or disagrees with the file.
    BadHeader {
        /// The page file.
        path: PathBuf,
        /// Which field and why.
        what: String,
    },
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::Io { path, source } => {
                write!(f, "{}: {source}", path.display())?;
                match source.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => f.write_str(
                        " (the disk is full or a file size limit was reached: free space, prune old pages with `tape prune`, or raise the limit, then try again)",
                    ),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS) => f.write_str(
                        " (this user may not use this journal file: run as the journal's owner or a member of its group)",
                    ),
                    _ => Ok(()),
                }
            }
            PageError::Truncated {
                path,
                len,
                expected,
            } => write!(
                f,
                "{}: page file is truncated ({len} bytes, expected {expected})",
                path.display()
            ),
            PageError::BadMagic { path } => {
                write!(
                    f,
                    "{}: not a tape journal page (wrong magic)",
                    path.display()
                )
            }
            PageError::BadVersion { path, version } => write!(
                f,
                "{}: journal format version {version}, this tape reads versions {VERSION_1} and {VERSION}: read it with the tape that wrote it{}",
                path.display(),
                if *version > VERSION {
                    " or a newer one"
                } else {
                    ""
                }
            ),
            PageError::BadHeader { path, what } => {
                write!(f, "{}: bad page header: {what}", path.display())
            }
        }
    }
}

impl std::error::Error for PageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PageError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl PageError {
    /// The page file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            PageError::Io { path, .. }
            | PageError::Truncated { path, .. }
            | PageError::BadMagic { path }
            | PageError::BadVersion { path, .. }
            | PageError::BadHeader { path, .. } => path,
        }
    }

    /// Whether the error is "the file does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(self, PageError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> PageError + '_ {
    move |source| PageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the shared page lock on an open page file (see the module docs),
/// waiting up to [`PRUNE_WAIT`] while a pruner holds the exclusive one, then
/// checks that the file was not deleted meanwhile (a deleted page is
/// reported as not found).
fn hold_page(file: &File, path: &Path) -> Result<(), PageError> {
    let give_up = Instant::now() + PRUNE_WAIT;
    let mut pause = Duration::from_micros(50);
    loop {
        // SAFETY: flock on a descriptor we own; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) if Instant::now() < give_up => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Some(libc::EWOULDBLOCK) => {
                return Err(PageError::Io {
                    path: path.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "another process holds the page's exclusive lock (a prune that does not finish)",
                    ),
                })
            }
            _ => return Err(io_err(path)(err)),
        }
    }
    use std::os::unix::fs::MetadataExt;
    if file.metadata().map_err(io_err(path))?.nlink() == 0 {
        return Err(PageError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "the page was pruned"),
        });
    }
    Ok(())
}

/// Reads and checks the header of an open page file. `expected`, when
/// given, is the geometry (version and largest page size) the journal's
/// other pages have.
fn check_header(
    file: &File,
    path: &Path,
    page_no: u64,
    expected: Option<Geometry>,
) -> Result<PageHeader, PageError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut buf = [0u8; PAGE_HEADER_LEN];
    if len < PAGE_HEADER_LEN as u64 {
        return Err(PageError::Truncated {
            path: path.to_path_buf(),
            len,
            expected: PAGE_HEADER_LEN as u64,
        });
    }
    file.read_exact_at(&mut buf, 0).map_err(io_err(path))?;
    let h = PageHeader::parse(&buf).expect("buffer holds a whole header");
    check_fields(&h, path, page_no, expected)?;
    if len < h.page_size {
        return Err(PageError::Truncated {
            path: path.to_path_buf(),
            len,
            expected: h.page_size,
        });
    }
    if len > h.page_size {
        return Err(PageError::BadHeader {
            path: path.to_path_buf(),
            what: format!(
                "file is {len} bytes, longer than its page_size {}",
                h.page_size
            ),
        });
    }
    Ok(h)
}

/// The checks of a page header's fields (FORMAT.md, "Page header"), the
/// file's length aside.
pub(crate) fn check_fields(
    h: &PageHeader,
    path: &Path,
    page_no: u64,
    expected: Option<Geometry>,
) -> Result<(), PageError> {
    let bad = |what: String| PageError::BadHeader {
        path: path.to_path_buf(),
        what,
    };
    if h.magic != MAGIC {
        return Err(PageError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    if h.version != VERSION && h.version != VERSION_1 {
        return Err(PageError::BadVersion {
            path: path.to_path_buf(),
            version: h.version,
        });
    }
    if h.header_len as usize != PAGE_HEADER_LEN {
        return Err(bad(format!("header_len {} is not 64", h.header_len)));
    }
    if h.frame_header_len as usize != crate::format::FRAME_HEADER_LEN {
        return Err(bad(format!(
            "frame_header_len {} is not 48",
            h.frame_header_len
        )));
    }
    if !crate::format::valid_page_size(h.page_size) {
        return Err(bad(format!(
            "page_size {} is not a power of two from 1 MiB to 1 GiB",
            h.page_size
        )));
    }
    let geo = h.geometry();
    if !crate::format::valid_page_size(geo.max_page_size) {
        return Err(bad(format!(
            "max_page_size {} is not a power of two from 1 MiB to 1 GiB",
            geo.max_page_size
        )));
    }
    if h.page_size > geo.max_page_size {
        return Err(bad(format!(
            "page_size {} is larger than the journal's max_page_size {}",
            h.page_size, geo.max_page_size
        )));
    }
    if let Some(want) = expected {
        if geo.version != want.version {
            return Err(bad(format!(
                "format version {} differs from the journal's {} (every page of a journal has one version)",
                geo.version, want.version
            )));
        }
        if geo.max_page_size != want.max_page_size {
            return Err(bad(if want.version == VERSION_1 {
                format!(
                    "page_size {} differs from the journal's {} (a version 1 journal's pages have one size)",
                    h.page_size, want.max_page_size
                )
            } else {
                format!(
                    "max_page_size {} differs from the journal's {}",
                    geo.max_page_size, want.max_page_size
                )
            }));
        }
    }
    if h.page_no != page_no {
        return Err(bad(format!(
            "page_no {} does not match the file name's {page_no}",
            h.page_no
        )));
    }
    Ok(())
}

/// The geometry of the page whose mapping (or first 64 bytes) is `page`,
/// read from its header, which was checked when it was opened.
pub(crate) fn mapped_geometry(page: &[u8]) -> Option<Geometry> {
    PageHeader::parse(page).map(|h| h.geometry())
}

/// Whether the page whose bytes are `page` may hold no frame: an
/// end-of-page marker at offset 64 (FORMAT.md, "Page sizes"). Only a
/// version-2 page smaller than its journal's largest may.
pub(crate) fn may_be_empty(page: &[u8]) -> bool {
    mapped_geometry(page)
        .is_some_and(|g| g.version != VERSION_1 && (page.len() as u64) < g.max_page_size)
}

/// Reads the header of page `page_no` and checks it, without mapping.
pub fn read_header(
    dir: &Path,
    name: &str,
    page_no: u64,
    expected: Option<Geometry>,
) -> Result<PageHeader, PageError> {
    let path = page_path(dir, name, page_no);
    let file = File::open(&path).map_err(io_err(&path))?;
    check_header(&file, &path, page_no, expected)
}

/// A page mapped read-only, as readers map it. Holds the shared page lock
/// (see the module docs) until dropped.
#[derive(Debug)]
pub struct PageRef {
    map: Mmap,
    page_no: u64,
    path: PathBuf,
    /// Kept open for the page lock.
    _file: File,
}

impl PageRef {
    /// Opens and maps page `page_no` read-only, at the size its header
    /// says, after checking the header (against the journal's geometry
    /// when `expected` is given). `populate` pre-faults the page tables
    /// (MAP_POPULATE) so that later reads take no page fault.
    pub fn open(
        dir: &Path,
        name: &str,
        page_no: u64,
        expected: Option<Geometry>,
        populate: bool,
    ) -> Result<PageRef, PageError> {
        let path = page_path(dir, name, page_no);
        let file = File::open(&path).map_err(io_err(&path))?;
        hold_page(&file, &path)?;
        let h = check_header(&file, &path, page_no, expected)?;
        let mut opts = MmapOptions::new();
        opts.len(h.page_size as usize);
        if populate {
            opts.populate();
        }
        // SAFETY: the file is at least page_size bytes long (checked above)
        // and tape never truncates page files; see the module's Safety
        // section for the shared-mutation rules.
        let map = unsafe { opts.map(&file) }.map_err(io_err(&path))?;
        Ok(PageRef {
            map,
            page_no,
            path,
            _file: file,
        })
    }

    /// The mapped bytes.
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Page number.
    pub fn page_no(&self) -> u64 {
        self.page_no
    }

    /// This page's size in bytes (its header's `page_size`).
    #[inline(always)]
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The page file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A page mapped read-write, as the writer maps it. Holds the shared page
/// lock (see the module docs) until dropped.
#[derive(Debug)]
pub struct PageMut {
    map: MmapMut,
    page_no: u64,
    path: PathBuf,
    /// Kept open for the page lock.
    _file: File,
}

/// How a writer's pages are made ready.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareOptions {
    /// Touch every 4 KiB of the page so the hot path takes no page fault.
    pub prefault: bool,
    /// Also `mlock` the page (best effort: a failure is ignored).
    pub mlock: bool,
}

impl PageMut {
    /// Opens page `page_no` read-write if it exists (at whatever size its
    /// header says), else creates it with `page_size` bytes (built under a
    /// temporary name, sized with `posix_fallocate` so that a full disk
    /// shows here and not as SIGBUS later, then renamed into place).
    pub fn create_or_open(
        dir: &Path,
        name: &str,
        page_no: u64,
        geo: Geometry,
        page_size: u64,
        opts: PrepareOptions,
    ) -> Result<PageMut, PageError> {
        let path = page_path(dir, name, page_no);
        let page = match Self::open(dir, name, page_no, Some(geo)) {
            Ok(p) => p,
            Err(e) if e.is_not_found() => Self::create(dir, name, page_no, geo, page_size)?,
            Err(e) => return Err(e),
        };
        debug_assert_eq!(page.path, path);
        page.prepare(opts);
        Ok(page)
    }

    /// Opens an existing page read-write after checking its header.
    pub fn open(
        dir: &Path,
        name: &str,
        page_no: u64,
        expected: Option<Geometry>,
    ) -> Result<PageMut, PageError> {
        let path = page_path(dir, name, page_no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        hold_page(&file, &path)?;
        let h = check_header(&file, &path, page_no, expected)?;
        // SAFETY: the file is page_size bytes long (checked above); only the
        // holder of the journal lock maps pages writable.
        let map = unsafe { MmapOptions::new().len(h.page_size as usize).map_mut(&file) }
            .map_err(io_err(&path))?;
        Ok(PageMut {
            map,
            page_no,
            path,
            _file: file,
        })
    }

    fn create(
        dir: &Path,
        name: &str,
        page_no: u64,
        geo: Geometry,
        page_size: u64,
    ) -> Result<PageMut, PageError> {
        debug_assert!(crate::format::valid_page_size(page_size) && page_size <= geo.max_page_size);
        let path = page_path(dir, name, page_no);
        let tmp = page_tmp_path(dir, name, page_no);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let cleanup = |e: PageError| {
            let _ = std::fs::remove_file(&tmp);
            e
        };
        // Locked before it gets its final name, so it is never unlocked there.
        hold_page(&file, &tmp).map_err(cleanup)?;
        // SAFETY: posix_fallocate on a descriptor we own; no memory effects.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, page_size as libc::off_t) };
        if rc != 0 {
            return Err(cleanup(PageError::Io {
                path: tmp.clone(),
                source: io::Error::from_raw_os_error(rc),
            }));
        }
        let header = PageHeader::new(geo, page_size, page_no, crate::clock::now_ns());
        file.write_all_at(&header.to_bytes(), 0)
            .map_err(|e| cleanup(io_err(&tmp)(e)))?;
        // SAFETY: the file was just sized to page_size bytes and nobody else
        // knows its temporary name.
        let map = unsafe { MmapOptions::new().len(page_size as usize).map_mut(&file) }
            .map_err(|e| cleanup(io_err(&tmp)(e)))?;
        std::fs::rename(&tmp, &path).map_err(|e| cleanup(io_err(&path)(e)))?;
        Ok(PageMut {
            map,
            page_no,
            path,
            _file: file,
        })
    }

    /// Pre-faults (and optionally mlocks) the mapping.
    pub fn prepare(&self, opts: PrepareOptions) {
        if opts.prefault {
            // SAFETY: madvise on our own mapping's range. MADV_POPULATE_WRITE
            // (Linux 5.14) makes the kernel allocate the page and map it
            // writable without writing to it.
            let rc = unsafe {
                libc::madvise(
                    self.map.as_ptr() as *mut libc::c_void,
                    self.map.len(),
                    libc::MADV_POPULATE_WRITE,
                )
            };
            if rc != 0 {
                // Older kernels: touch every 4 KiB instead.
                let base = self.map.as_ptr() as *mut u8;
                for off in (0..self.map.len()).step_by(4096) {
                    // SAFETY: off < len, inside the mapping. Only the holder
                    // of the journal lock maps a page writable, and the
                    // preparer hands a page to the appender only after this
                    // returns, so no frame is being written concurrently;
                    // writing back the byte just read changes nothing a
                    // reader could observe.
                    unsafe {
                        let p = base.add(off);
                        p.write_volatile(p.read_volatile());
                    }
                }
            }
        }
        if opts.mlock {
            // SAFETY: locks our own mapping's range; no memory effects.
            unsafe { libc::mlock(self.map.as_ptr().cast(), self.map.len()) };
        }
    }

    /// Start of the mapping.
    #[inline(always)]
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_ptr() as *mut u8
    }

    /// The mapped bytes, for reading.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Page number.
    pub fn page_no(&self) -> u64 {
        self.page_no
    }

    /// This page's size in bytes (its header's `page_size`).
    pub fn size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The page file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
