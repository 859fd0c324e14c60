//! Each command as the HTTP request of the API it stands for.

use reqwest::Method;
use serde_json::{Value, json};

use super::Request;
use crate::cli::Exit;
use crate::wire::{HistoryParams, InboxParams};

impl Request {
    /// The HTTP request this command is.
    pub(super) fn http(&self) -> (Method, String, Option<Value>) {
        match self {
            Request::Send { from, to, content, priority, reply_to, .. } => {
                let mut body = json!({"from": from, "to": to, "content": content});
                if let Some(priority) = priority {
                    body["priority"] = json!(priority);
                }
                if let Some(reply_to) = reply_to {
                    body["reply_to"] = json!(reply_to);
                }
                (Method::POST, "/api/send".into(), Some(body))
            }
            Request::Inbox { agent, all, limit, after, priority } => {
                let params = InboxParams {
                    agent: Some(agent.clone()),
                    unread: Some((!all).to_string()),
                    limit: limit.map(|l| l.to_string()),
                    after: after.map(|a| a.to_string()),
                    priority: priority.clone(),
                };
                (Method::GET, format!("/api/inbox?{}", query(&params)), None)
            }
            Request::Ack { agent, ids, all, up_to } => {
                let body = match (all, up_to) {
                    (true, _) => json!({"agent": agent, "all": true}),
                    (false, Some(up_to)) => json!({"agent": agent, "up_to": up_to}),
                    (false, None) => json!({"agent": agent, "ids": ids}),
                };
                (Method::POST, "/api/ack".into(), Some(body))
            }
            Request::History { agent, with, since, until, limit, after } => {
                let params = HistoryParams {
                    agent: Some(agent.clone()),
                    with: with.clone(),
                    since: since.clone(),
                    until: until.clone(),
                    limit: limit.map(|l| l.to_string()),
                    after: after.map(|a| a.to_string()),
                    thread: None,
                };
                (Method::GET, format!("/api/history?{}", query(&params)), None)
            }
            Request::Agents => (Method::GET, "/api/agents".into(), None),
        }
    }
}

/// The query string of `params`; parameters not given are left out.
fn query(params: &impl serde::Serialize) -> String {
    serde_urlencoded::to_string(params).expect("a query string")
}

/// `content` of `-` means standard input.
pub(super) fn resolve_stdin(mut body: Value) -> Result<Value, Exit> {
    if body["content"] == "-" {
        let mut content = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut content).map_err(|err| {
            eprintln!("clawbus: cannot read standard input: {err}");
            Exit::Usage
        })?;
        body["content"] = json!(content);
    }
    Ok(body)
}
