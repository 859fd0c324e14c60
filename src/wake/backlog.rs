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
    let (mut found, mut bytes) = (Vec::new(), 0);
    while found.len() < MAX_SLICE {
        let Some(raw) = scan.next().await? else { break };
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
