//! Reading what an agent has not been woken for, in `agent` mode: the
//! messages themselves, a bounded slice per call, so that a long gateway
//! outage costs no memory.

use crate::bus::{Bus, Unavailable};
use crate::mailbox::view;
use crate::message::{Inbox, MessageView};

/// Most messages handed to `/hooks/agent` in one call.
pub const MAX_SLICE: usize = 20;
/// Most content bytes in one call (the gateway takes 256 KiB bodies); a
/// single larger message still goes alone, and is shortened by the notice.
pub const MAX_SLICE_BYTES: usize = 192 * 1024;

/// The oldest messages in `inbox` with ids in `(after, up_to]`, as unread:
/// at most [`MAX_SLICE`], and no more content than [`MAX_SLICE_BYTES`]
/// unless the first message alone has more.
pub async fn slice(bus: &Bus, inbox: &Inbox, after: u64, up_to: u64) -> Result<Vec<MessageView>, Unavailable> {
    let mut scan = bus.scan(inbox.cursors(bus.subjects(), after), MAX_SLICE);
    let (mut found, mut bytes, mut scanned) = (Vec::new(), 0, after);
    while found.len() < MAX_SLICE {
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
        if !inbox.holds(bus.subjects(), &raw.subject, raw.seq) {
            continue;
        }
        let Some(message) = view(&raw, false) else { continue };
        bytes += message.envelope.content.len();
        if bytes > MAX_SLICE_BYTES && !found.is_empty() {
            break;
        }
        found.push(message);
    }
    Ok(found)
}
