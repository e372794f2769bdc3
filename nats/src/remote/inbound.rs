//! The exposer's side of the connection: what came on its subscriptions,
//! taken without waking another thread.

use async_nats::{Message, Subscriber};
use futures_util::StreamExt;
use std::task::{Context, Poll};
use std::time::Duration;

/// How often an idle exposer looks at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Most messages taken from the connection at once.
pub(super) const BATCH: usize = 256;

/// A message for the exposer.
pub(super) enum Inbound {
    /// A call to the exposed name of that index.
    Call(usize, Message),
    /// A request on `tape.online`.
    Presence(Message),
}

/// Takes what the connection has for this exposer: waiting for something
/// (or a change of state, or the tick) when `block`, else only what is
/// there after letting the connection read and write. Returns whether the
/// connection was closed.
pub(super) async fn gather(
    subs: &mut [Option<Subscriber>],
    online: &mut Subscriber,
    notify: &tokio::sync::Notify,
    block: bool,
    out: &mut Vec<Inbound>,
) -> bool {
    let mut closed = false;
    if block {
        let ready = std::future::poll_fn(|cx| {
            closed |= drain(subs, online, cx, out);
            if out.is_empty() && !closed {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        tokio::select! {
            biased;
            _ = ready => {}
            _ = notify.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    } else {
        // The first yield lets the runtime poll the socket, the second
        // lets the connection task handle what it read and write what
        // was queued.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    std::future::poll_fn(|cx| {
        closed |= drain(subs, online, cx, out);
        Poll::Ready(())
    })
    .await;
    closed
}

/// Moves the messages ready on the subscriptions to `out` (at most
/// [`BATCH`]); whether one of them has ended.
fn drain(
    subs: &mut [Option<Subscriber>],
    online: &mut Subscriber,
    cx: &mut Context<'_>,
    out: &mut Vec<Inbound>,
) -> bool {
    let mut closed = false;
    while out.len() < BATCH {
        match online.poll_next_unpin(cx) {
            Poll::Ready(Some(m)) => out.push(Inbound::Presence(m)),
            Poll::Ready(None) => {
                closed = true;
                break;
            }
            Poll::Pending => break,
        }
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let Some(s) = s else { continue };
        while out.len() < BATCH {
            match s.poll_next_unpin(cx) {
                Poll::Ready(Some(m)) => out.push(Inbound::Call(i, m)),
                Poll::Ready(None) => {
                    closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
    closed
}
