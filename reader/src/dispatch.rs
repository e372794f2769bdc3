//! Dispatch by message type: one handler per type id, given the frame
//! viewed as its plain struct or decoded as its serde type.

use crate::{Reader, ReaderFrame};
use tape_journal::ReadError;
use tape_typed::{DecodeError, PlainMessage, SerdeMessage, TypedFrame, ViewError};

type Route<'h, C> = Box<dyn FnMut(&mut C, &ReaderFrame<'_>) -> Result<(), Bad> + 'h>;
type Other<'h, C> = Box<dyn FnMut(&mut C, &ReaderFrame<'_>) + 'h>;

/// A frame of a routed type whose payload was not its type's.
enum Bad {
    View(ViewError),
    Decode(DecodeError),
}

/// Handlers by message type id, each given a context `C` (the strategy's
/// state, so that every handler can change it), the frame and the message:
/// a `&T` borrowed from the mapping for a [`PlainMessage`], a decoded `T`
/// for a [`SerdeMessage`].
///
/// ```
/// # let root = tempfile::tempdir().unwrap();
/// use tape_journal::{Appender, AppendOptions};
/// use tape_reader::{Dispatch, Reader, ServiceMode, Start};
/// use tape_typed::{PlainMessage, SerdeMessage, TypedAppend};
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
///
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[repr(C)]
/// struct Tick { px: i64, qty: i64 }
/// impl PlainMessage for Tick { const TYPE: u32 = 1; }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Fill { id: u64, qty: i64 }
/// impl SerdeMessage for Fill { const TYPE: u32 = 2; }
///
/// let dir = tape_journal::journal_dir(root.path());
/// let opts = AppendOptions { page_size: 1 << 20, ..AppendOptions::default() };
/// let mut md = Appender::create(&dir, "md", opts).unwrap();
/// md.write_plain(&Tick { px: 100, qty: 5 }).unwrap();
/// md.write_serde(&Fill { id: 1, qty: 3 }).unwrap();
/// md.write(99, b"something else").unwrap();
///
/// #[derive(Default)]
/// struct Book { volume: i64, filled: i64, other: u32 }
/// let mut d = Dispatch::new()
///     .on(|b: &mut Book, _, t: &Tick| b.volume += t.qty)
///     .on_serde(|b: &mut Book, _, f: Fill| b.filled += f.qty)
///     .otherwise(|b: &mut Book, _| b.other += 1);
///
/// let mut r = Reader::builder("strategy").root(root.path())
///     .service(ServiceMode::Never).start(Start::First).create().unwrap();
/// r.add_journal(&dir, "md").unwrap();
/// let mut book = Book::default();
/// while r.dispatch(&mut d, &mut book).unwrap() {}
/// assert_eq!((book.volume, book.filled, book.other), (5, 3, 1));
/// ```
pub struct Dispatch<'h, C> {
    /// `(type id, handler)`, looked up in order: a few types, a linear scan.
    routes: Vec<(u32, Route<'h, C>)>,
    other: Option<Other<'h, C>>,
}

impl<C> std::fmt::Debug for Dispatch<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<u32> = self.routes.iter().map(|(t, _)| *t).collect();
        f.debug_struct("Dispatch")
            .field("types", &types)
            .field("otherwise", &self.other.is_some())
            .finish()
    }
}

impl<C> Default for Dispatch<'_, C> {
    fn default() -> Self {
        Dispatch {
            routes: Vec::new(),
            other: None,
        }
    }
}

impl<'h, C> Dispatch<'h, C> {
    /// No handler yet: every frame goes to [`otherwise`](Self::otherwise),
    /// or is skipped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames of type `T::TYPE` go to `f` with the payload viewed as a
    /// `&T`, straight from the mapping.
    ///
    /// # Panics
    ///
    /// If a handler for that type id was added already (a setup mistake:
    /// two message types with one id).
    pub fn on<T: PlainMessage>(self, mut f: impl FnMut(&mut C, &ReaderFrame<'_>, &T) + 'h) -> Self {
        self.route(
            T::TYPE,
            Box::new(move |c, frame| {
                let msg = frame.view::<T>().map_err(Bad::View)?;
                f(c, frame, msg);
                Ok(())
            }),
        )
    }

    /// Frames of type `T::TYPE` go to `f` with the payload decoded as a
    /// `T` (bincode).
    ///
    /// # Panics
    ///
    /// As [`on`](Self::on).
    pub fn on_serde<T: SerdeMessage>(
        self,
        mut f: impl FnMut(&mut C, &ReaderFrame<'_>, T) + 'h,
    ) -> Self {
        self.route(
            T::TYPE,
            Box::new(move |c, frame| {
                let msg = frame.decode::<T>().map_err(Bad::Decode)?;
                f(c, frame, msg);
                Ok(())
            }),
        )
    }

    /// Frames of a type no handler takes go to `f` (without it they are
    /// skipped).
    pub fn otherwise(mut self, f: impl FnMut(&mut C, &ReaderFrame<'_>) + 'h) -> Self {
        self.other = Some(Box::new(f));
        self
    }

    fn route(mut self, id: u32, f: Route<'h, C>) -> Self {
        assert!(
            self.routes.iter().all(|(t, _)| *t != id),
            "two handlers for message type {id}: give each message type its own id"
        );
        self.routes.push((id, f));
        self
    }

    /// Hands `frame` to the handler of its type (or to
    /// [`otherwise`](Self::otherwise)); returns whether a typed handler
    /// took it. A frame of a handled type whose payload is not that type's
    /// (another length, malformed) is an error naming the journal and
    /// sequence number; the handler is not called.
    pub fn handle(&mut self, ctx: &mut C, frame: &ReaderFrame<'_>) -> Result<bool, DispatchError> {
        let ty = frame.msg_type();
        match self.routes.iter_mut().find(|(t, _)| *t == ty) {
            Some((_, f)) => match f(ctx, frame) {
                Ok(()) => Ok(true),
                Err(bad) => Err(DispatchError::payload(frame, bad)),
            },
            None => {
                if let Some(f) = &mut self.other {
                    f(ctx, frame);
                }
                Ok(false)
            }
        }
    }
}

/// Why [`Reader::dispatch`] or [`Dispatch::handle`] failed.
#[derive(Debug)]
pub enum DispatchError {
    /// Reading the next frame failed (damage).
    Read(ReadError),
    /// A frame of a plain type had another length (or alignment).
    View {
        /// The journal's name.
        journal: String,
        /// The frame's sequence number.
        seq: u64,
        /// What was wrong.
        error: ViewError,
    },
    /// A frame of a serde type did not decode.
    Decode {
        /// The journal's name.
        journal: String,
        /// The frame's sequence number.
        seq: u64,
        /// What was wrong.
        error: DecodeError,
    },
}

impl DispatchError {
    fn payload(frame: &ReaderFrame<'_>, bad: Bad) -> DispatchError {
        let (journal, seq) = (frame.journal_name.to_string(), frame.seq());
        match bad {
            Bad::View(error) => DispatchError::View {
                journal,
                seq,
                error,
            },
            Bad::Decode(error) => DispatchError::Decode {
                journal,
                seq,
                error,
            },
        }
    }
}

impl std::fmt::Display for DispatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DispatchError::Read(e) => e.fmt(f),
            DispatchError::View {
                journal,
                seq,
                error,
            } => write!(f, "journal {journal}, seq {seq}: {error}"),
            DispatchError::Decode {
                journal,
                seq,
                error,
            } => write!(f, "journal {journal}, seq {seq}: {error}"),
        }
    }
}

impl std::error::Error for DispatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DispatchError::Read(e) => Some(e),
            DispatchError::View { error, .. } => Some(error),
            DispatchError::Decode { error, .. } => Some(error),
        }
    }
}

impl Reader {
    /// Reads the next frame ([`Reader::next`]) and hands it to `d`'s
    /// handler of its type; returns whether there was a frame. Never
    /// blocks. A payload error (see [`Dispatch::handle`]) is returned after
    /// the frame is consumed: calling again goes on with the next one.
    #[inline]
    pub fn dispatch<C>(
        &mut self,
        d: &mut Dispatch<'_, C>,
        ctx: &mut C,
    ) -> Result<bool, DispatchError> {
        match self.next().map_err(DispatchError::Read)? {
            Some(frame) => d.handle(ctx, &frame).map(|_| true),
            None => Ok(false),
        }
    }
}
