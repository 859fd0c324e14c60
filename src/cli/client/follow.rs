//! `tail`: the live stream of server-sent events, followed across
//! interruptions from the last id seen.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::connection::Client;
use crate::cli::Exit;
use crate::message::MessageView;
use crate::wire::ErrorAnswer;

impl Client {
    /// Follows the live stream, reconnecting from the last id seen.
    pub(super) async fn tail(&self, agent: Option<&str>, after: Option<u64>, count: Option<u64>) -> Exit {
        let path = match agent {
            Some(agent) => format!("/api/stream?agent={agent}"),
            None => "/api/stream".into(),
        };
        let (mut last, mut shown) = (after, 0u64);
        let mut failures = 0u32;
        loop {
            let mut request = self.request(Method::GET, &path);
            if let Some(id) = last {
                request = request.header("Last-Event-ID", id.to_string());
            }
            let response = match request.send().await {
                Ok(response) if response.status().is_success() => response,
                Ok(response) => {
                    let status = response.status();
                    let answer = serde_json::from_str::<ErrorAnswer>(&response.text().await.unwrap_or_default());
                    eprintln!("clawbus: {status}: {}", answer.map_or("no message".into(), |a| a.message));
                    return if status == StatusCode::NOT_FOUND { Exit::NotFound } else { Exit::Refused };
                }
                Err(err) if failures < 3 || last.is_some() => {
                    failures += 1;
                    eprintln!("clawbus: stream interrupted ({err}); resuming");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(err) => return self.unreachable(&err),
            };
            failures = 0;
            let mut events = Events::new(response);
            while let Some(message) = events.next().await {
                last = Some(message.id);
                self.print_messages(std::slice::from_ref(&message), false);
                shown += 1;
                if count.is_some_and(|count| shown >= count) {
                    return Exit::Ok;
                }
            }
            eprintln!(
                "clawbus: stream closed; resuming after {}",
                last.map_or("the start".into(), |id| id.to_string())
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Server-sent events of a response, as message objects.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Events { response, buffer: String::new() }
    }

    async fn next(&mut self) -> Option<MessageView> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
                if block.lines().any(|l| l.trim() == "event: message")
                    && let Ok(message) = serde_json::from_str(&data)
                {
                    return Some(message);
                }
                continue;
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
