//! Answers for people: tables padded to their widest cell, or the API's
//! JSON as it came with `--json`.

use std::io::Write;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Request;
use super::connection::Client;
use crate::message::MessageView;
use crate::wire::{Acked, Agents, History, Inbox, Sent};

impl Client {
    /// Shows the answer to `request`; one this client cannot read (from an
    /// adapter of another version) as the JSON it came as.
    pub(super) fn print(&self, request: &Request, answer: &Value) {
        if self.json || !self.print_typed(request, answer) {
            println!("{answer}");
        }
    }

    /// Shows `answer` as the answer type of `request`, if it is one.
    fn print_typed(&self, request: &Request, answer: &Value) -> bool {
        match request {
            Request::Send { .. } => typed(answer, |sent: Sent| {
                let duplicate = if sent.duplicate { " (duplicate of an earlier send)" } else { "" };
                println!("sent {}{duplicate}", sent.id);
            }),
            Request::Ack { .. } => typed(answer, |acked: Acked| {
                println!("acknowledged {}", acked.acked);
                if !acked.ignored.is_empty() {
                    println!("ignored (not in the inbox): {}", join(&acked.ignored));
                }
            }),
            Request::Inbox { .. } => typed(answer, |inbox: Inbox| {
                self.print_messages(&inbox.messages, true);
                println!("{} unread", inbox.unread);
            }),
            Request::History { .. } => typed(answer, |history: History| self.print_messages(&history.messages, true)),
            Request::Agents => typed(answer, |agents: Agents| {
                let rows: Vec<Vec<String>> = agents
                    .agents
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.to_string(),
                            a.host.clone(),
                            if a.online { "online".into() } else { "offline".into() },
                            a.unread.to_string(),
                            // As the API names it; `-` for none.
                            text(&serde_json::json!(a.wake_mode)),
                            a.last_seen.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(&["AGENT", "HOST", "STATE", "UNREAD", "REACHED BY", "LAST SEEN"], &rows);
            }),
        }
    }

    pub(super) fn print_messages(&self, messages: &[MessageView], header: bool) {
        if self.json {
            for message in messages {
                println!("{}", serde_json::to_string(message).expect("a message serializes"));
            }
            return;
        }
        let rows: Vec<Vec<String>> = messages
            .iter()
            .map(|m| {
                let e = &m.envelope;
                vec![
                    m.id.to_string(),
                    e.timestamp.clone(),
                    e.from.clone(),
                    e.to.clone(),
                    e.priority.as_str().into(),
                    if m.read { "read" } else { "unread" }.into(),
                    e.reply_to.map_or(String::new(), |id| format!("re {id}")),
                    one_line(&e.content),
                ]
            })
            .collect();
        if header {
            table(&["ID", "TIME", "FROM", "TO", "PRIORITY", "STATE", "REPLY", "CONTENT"], &rows);
        } else {
            table(&[], &rows);
        }
    }
}

/// Runs `show` on `answer` as a `T`; false if it is not one.
fn typed<T: DeserializeOwned>(answer: &Value, show: impl FnOnce(T)) -> bool {
    serde_json::from_value(answer.clone()).map(show).is_ok()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Content on one line of at most 72 characters.
fn one_line(content: &str) -> String {
    let flat: String = content.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match flat.char_indices().nth(72) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let columns = header.len().max(rows.first().map_or(0, Vec::len));
    let width = |i: usize| {
        let cells = rows.iter().map(|r| r[i].chars().count());
        cells.chain(header.get(i).map(|h| h.len())).max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}", w = *w)).collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    if !header.is_empty() {
        line(header.to_vec());
    }
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
