//! Reading what an agent has not been woken for, in `agent` mode: the
//! messages themselves, a bounded slice per call, so that a long gateway
//! outage costs no memory. Messages the agent has acknowledged are left
//! out: it has acted on them, wherever they were handed to it before.

use crate::bus::{Bus, Inbox, Unavailable};
use crate::message::MessageView;
use crate::readstate::{self, ReadMark};

/// Most messages handed to `/hooks/agent` in one call.
pub(super) const MAX_SLICE: usize = 20;
/// Most content bytes in one call (the gateway takes 256 KiB bodies); a
/// single larger message still goes alone, and is shortened by the notice.
pub(super) const MAX_SLICE_BYTES: usize = 192 * 1024;

/// The messages of one call, and the id up to which it covers the inbox:
/// past its last message when only acknowledged ones follow.
pub(super) struct Slice {
    pub messages: Vec<MessageView>,
    pub up_to: u64,
}

/// The oldest unacknowledged messages in `inbox` with ids in
/// `(after, up_to]`, as unread: at most [`MAX_SLICE`], and no more content
/// than [`MAX_SLICE_BYTES`] unless the first message alone has more. No
/// messages: nothing up to `up_to` is left to hand over.
pub(super) async fn slice(bus: &Bus, inbox: &Inbox, after: u64, up_to: u64) -> Result<Slice, Unavailable> {
    let acknowledged = trusted(bus, readstate::load(bus, &inbox.agent).await?.mark).await?;
    let mut scan = bus.scan(inbox.cursors(bus.subjects(), after), MAX_SLICE);
    let (mut found, mut bytes, mut scanned) = (Vec::new(), 0, after);
    // Full before `up_to`: the call then covers up to its last message.
    let mut full = false;
    while !full {
        let Some(raw) = scan.next().await? else {
            // `up_to` comes from a consumer, which follows the stream's
            // leader; a replica answering direct gets may be a moment behind
            // it. A slice that ends short of `up_to` is confirmed on the
            // leader, so that the wake mark never passes a message not
            // handed over (the call is retried instead).
            if scanned < up_to {
                let next = bus.first_on_leader_of(&inbox.starts(bus.subjects(), scanned)).await?;
                if next.is_some_and(|raw| raw.seq <= up_to) {
                    return Err(Unavailable::new("the replica read is behind the stream's leader"));
                }
            }
            break;
        };
        scanned = raw.seq;
        if raw.seq > up_to {
            break;
        }
        if !inbox.holds(bus.subjects(), &raw.subject, raw.seq) || acknowledged.is_read(raw.seq) {
            continue;
        }
        let Some(message) = raw.view(false) else { continue };
        bytes += message.envelope.content.len();
        if bytes > MAX_SLICE_BYTES && !found.is_empty() {
            full = true;
            break;
        }
        found.push(message);
        full = found.len() == MAX_SLICE;
    }
    let up_to = if full { found.last().map_or(up_to, |last| last.id) } else { up_to };
    Ok(Slice { messages: found, up_to })
}

/// `mark`, unless it runs ahead of the stream (left by an older version,
/// or a stream re-created behind the adapter's back; the inbox cuts such a
/// mark back when it is next read): then an empty one, so that it hides
/// nothing (handed twice rather than never).
pub(super) async fn trusted(bus: &Bus, mark: ReadMark) -> Result<ReadMark, Unavailable> {
    if mark.highest() > bus.seen() && mark.highest() > bus.last_sequence().await? {
        tracing::warn!(floor = mark.floor, "a read mark is ahead of the stream; wakes do not go by it");
        return Ok(ReadMark::default());
    }
    Ok(mark)
}
