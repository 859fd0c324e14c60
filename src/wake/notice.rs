//! The text a wake carries.
//!
//! A `wake` notice is a trusted system line in the agent's next prompt, so it
//! says only what the adapter knows to be true (who sent, whether any message
//! is urgent, where to read) and never any content, which comes from other
//! agents and is untrusted. It deliberately has no counts or ids: while the
//! situation stays the same the text stays the same, and the gateway folds a
//! repeat into the pending one instead of stacking near-identical lines.
//!
//! In `agent` mode the content itself goes to `/hooks/agent`, where OpenClaw
//! wraps it as external content.

use crate::message::MessageView;
use crate::names::AgentName;

use super::pending::Pending;

/// Senders named in a notice before "and others".
const MAX_NAMED: usize = 5;
/// Content bytes put into one `/hooks/agent` message (its limit is 256 KiB).
const MAX_AGENT_TEXT: usize = 200 * 1024;

pub fn wake_text(agent: &AgentName, pending: &Pending, base_url: &str) -> String {
    let names: Vec<&str> = pending.senders.iter().map(String::as_str).take(MAX_NAMED).collect();
    let senders = match (names.as_slice(), pending.senders.len() > MAX_NAMED) {
        ([], _) => "other agents".to_owned(),
        (names, true) => format!("{} and others", names.join(", ")),
        ([one], false) => (*one).to_owned(),
        ([init @ .., last], false) => format!("{} and {last}", init.join(", ")),
    };
    let urgent = if pending.urgent { " (urgent)" } else { "" };
    format!(
        "clawbus: unread messages for {agent} from {senders}{urgent}. \
         Read them with GET {base_url}/api/inbox?agent={agent} \
         and acknowledge them with POST {base_url}/api/ack."
    )
}

/// The `/hooks/agent` message: the slice of messages, oldest first, and
/// whether `more` wait in the inbox. A message too large for the call is
/// cut, and says where to read it whole.
pub fn agent_text(agent: &AgentName, messages: &[MessageView], more: bool, base_url: &str) -> String {
    let mut text = format!(
        "New messages for {agent} on the clawbus agent bus. Reply with POST {base_url}/api/send \
         and acknowledge with POST {base_url}/api/ack (ids below).\n"
    );
    for message in messages {
        let e = &message.envelope;
        let head = format!(
            "\n--- message {} from {} to {} ({}, {}){} ---\n",
            message.id,
            e.from,
            e.to,
            e.priority.as_str(),
            e.timestamp,
            e.reply_to.map(|id| format!(", in reply to {id}")).unwrap_or_default(),
        );
        let room = MAX_AGENT_TEXT.saturating_sub(text.len() + head.len() + 200);
        text.push_str(&head);
        if e.content.len() <= room {
            text.push_str(&e.content);
        } else {
            let cut = (0..=room).rev().find(|&i| e.content.is_char_boundary(i)).unwrap_or(0);
            text.push_str(&e.content[..cut]);
            text.push_str(&format!(
                "\n(cut: read message {} whole with GET {base_url}/api/inbox?agent={agent})",
                message.id
            ));
        }
        text.push('\n');
    }
    if more {
        text.push_str(&format!("\n(more in the inbox: GET {base_url}/api/inbox?agent={agent})\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Envelope, Priority};
    use time::OffsetDateTime;

    fn pending(senders: &[&str], urgent: bool) -> Pending {
        let mut p = Pending::default();
        for (i, s) in senders.iter().enumerate() {
            let priority = if urgent { Priority::Urgent } else { Priority::Normal };
            p.add(i as u64 + 1, s, priority, OffsetDateTime::UNIX_EPOCH);
        }
        p
    }

    #[test]
    fn notice_is_stable_while_the_situation_is() {
        let bob = AgentName::parse("bob").unwrap();
        let one = wake_text(&bob, &pending(&["alice"], false), "http://h:1");
        let many = wake_text(&bob, &pending(&["alice", "alice", "alice"], false), "http://h:1");
        assert_eq!(one, many);
        assert!(one.contains("from alice.") && one.contains("http://h:1/api/inbox?agent=bob"), "{one}");
        let urgent = wake_text(&bob, &pending(&["carol", "alice"], true), "http://h:1");
        assert!(urgent.contains("from alice and carol (urgent)"), "{urgent}");
        let crowd = wake_text(&bob, &pending(&["a", "b", "c", "d", "e", "f"], false), "http://h:1");
        assert!(crowd.contains("a, b, c, d, e and others"), "{crowd}");
    }

    #[test]
    fn agent_text_carries_content_within_the_limit() {
        let bob = AgentName::parse("bob").unwrap();
        let message = |id, content: &str| MessageView {
            id,
            envelope: Envelope {
                from: "alice".into(),
                to: "bob".into(),
                content: content.into(),
                priority: Priority::High,
                reply_to: Some(1),
                timestamp: "2026-11-25T10:00:00.000Z".into(),
            },
            read: false,
        };
        let text = agent_text(&bob, &[message(7, "run the tests")], false, "http://h:1");
        assert!(text.contains("message 7 from alice to bob (high, 2026-11-25T10:00:00.000Z), in reply to 1"), "{text}");
        assert!(text.contains("run the tests") && !text.contains("more in the inbox"));
        let big = "é".repeat(150 * 1024);
        let text = agent_text(&bob, &[message(1, &big)], true, "http://h:1");
        assert!(text.len() <= MAX_AGENT_TEXT, "{}", text.len());
        assert!(text.contains("(cut: read message 1 whole") && text.contains("(more in the inbox"), "{}", text.len());
    }
}
