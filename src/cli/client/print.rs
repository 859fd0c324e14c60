//! Answers for people: tables padded to their widest cell, or the API's
//! JSON as it came with `--json`.

use std::io::Write;

use serde_json::Value;

use super::Request;
use super::connection::Client;

impl Client {
    /// Shows the answer to `request`.
    pub(super) fn print(&self, request: &Request, answer: &Value) {
        if self.json {
            println!("{answer}");
            return;
        }
        match request {
            Request::Send { .. } => {
                let duplicate = if answer["duplicate"] == true { " (duplicate of an earlier send)" } else { "" };
                println!("sent {}{duplicate}", answer["id"]);
            }
            Request::Ack { .. } => {
                println!("acknowledged {}", answer["acked"]);
                if let Some(ignored) = answer["ignored"].as_array().filter(|i| !i.is_empty()) {
                    println!("ignored (not in the inbox): {}", join(ignored));
                }
            }
            Request::Inbox { .. } => {
                self.print_messages(answer["messages"].as_array().map_or(&[], Vec::as_slice), true);
                println!("{} unread", answer["unread"]);
            }
            Request::History { .. } => {
                self.print_messages(answer["messages"].as_array().map_or(&[], Vec::as_slice), true)
            }
            Request::Agents => {
                let rows: Vec<Vec<String>> = answer["agents"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .map(|a| {
                        vec![
                            text(&a["name"]),
                            text(&a["host"]),
                            if a["online"] == true { "online".into() } else { "offline".into() },
                            text(&a["unread"]),
                            text(&a["wake_mode"]),
                            text(&a["last_seen"]),
                        ]
                    })
                    .collect();
                table(&["AGENT", "HOST", "STATE", "UNREAD", "REACHED BY", "LAST SEEN"], &rows);
            }
        }
    }

    pub(super) fn print_messages(&self, messages: &[Value], header: bool) {
        if self.json {
            for message in messages {
                println!("{message}");
            }
            return;
        }
        let rows: Vec<Vec<String>> = messages
            .iter()
            .map(|m| {
                let read = if m["read"] == true { "read" } else { "unread" };
                let reply = m["reply_to"].as_u64().map_or(String::new(), |id| format!("re {id}"));
                vec![
                    text(&m["id"]),
                    text(&m["timestamp"]),
                    text(&m["from"]),
                    text(&m["to"]),
                    text(&m["priority"]),
                    read.into(),
                    reply,
                    one_line(m["content"].as_str().unwrap_or_default()),
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

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn join(values: &[Value]) -> String {
    values.iter().map(text).collect::<Vec<_>>().join(", ")
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
