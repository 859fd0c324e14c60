//! `GET /api/agents` and the fleet-wide numbers of `GET /api/stats`.

use futures_util::{StreamExt, TryStreamExt, stream};

use super::Mailbox;
use crate::bus::Unavailable;
use crate::readstate;
use crate::registry::AgentStatus;

/// Unread counts computed at once.
const CONCURRENCY: usize = 16;

/// One row of `GET /api/agents`.
pub struct AgentRow {
    pub status: AgentStatus,
    pub unread: u64,
}

impl Mailbox {
    /// Every registered agent with its unread count.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, Unavailable> {
        let (statuses, marks, last) =
            tokio::try_join!(self.registry.list(), readstate::load_all(&self.bus), self.bus.last_sequence())?;
        stream::iter(statuses)
            .map(|status| {
                let stored = marks.get(status.inbox.agent.as_str());
                let (mark, written) = stored.map_or_else(Default::default, |m| (m.value.clone(), Some(m.stored)));
                async move {
                    // A mark ahead of the stream is repaired when its agent
                    // reads; here it is only counted as if it were.
                    let mark = match mark.within(last) {
                        Some(_) => mark.within(self.newest_before(written).await?).unwrap_or(mark),
                        None => mark,
                    };
                    let unread = self.unread(&status.inbox, &mark).await?;
                    Ok(AgentRow { status, unread })
                }
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// Messages in the stream (markers excluded).
    pub async fn message_count(&self) -> Result<u64, Unavailable> {
        Ok(self.bus.count(&self.bus.subjects().every_message(), 1).await?.total)
    }
}
