//! `GET /api/inbox`: a page of an agent's mail, and how much is unread.

use super::{MailError, Mailbox};
use crate::bus::Unavailable;
use crate::message::{MessageView, Priority};
use crate::names::AgentName;

#[derive(Debug, Clone)]
pub(crate) struct InboxQuery {
    pub unread_only: bool,
    pub limit: usize,
    pub after: u64,
    pub priority: Option<Priority>,
}

#[derive(Debug)]
pub(crate) struct InboxPage {
    pub messages: Vec<MessageView>,
    pub unread: u64,
}

impl Mailbox {
    pub(crate) async fn inbox(&self, agent: &AgentName, query: &InboxQuery) -> Result<InboxPage, MailError> {
        let inbox = self.inbox_of(agent).await?;
        let mark = self.read_mark(agent).await?.mark;
        let after = if query.unread_only { query.after.max(mark.floor) } else { query.after };
        let page = async {
            let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), after), query.limit + 1);
            let mut messages = Vec::new();
            while messages.len() < query.limit {
                let Some(raw) = scan.next().await? else { break };
                if !inbox.holds(self.bus.subjects(), &raw.subject, raw.seq) {
                    continue;
                }
                let Some(view) = raw.view(mark.is_read(raw.seq)) else { continue };
                let wanted =
                    !(query.unread_only && view.read) && query.priority.is_none_or(|p| p == view.envelope.priority);
                if wanted {
                    messages.push(view);
                }
            }
            Ok::<_, Unavailable>(messages)
        };
        let (messages, unread) = tokio::try_join!(page, self.unread(&inbox, &mark))?;
        Ok(InboxPage { messages, unread })
    }
}
