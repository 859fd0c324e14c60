//! A small client for the clawbus HTTP API.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// An answer: status and body (JSON, or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api { base: base.into(), http: crate::http_client(Duration::from_secs(30)), token: None }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The same client, authenticating with `token`.
    pub fn with_token(&self, token: &str) -> Api {
        Api { token: Some(token.into()), ..self.clone() }
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Answer {
        self.try_answer(request).await.expect("request reaches the adapter")
    }

    /// `Err` when no answer came (connection refused or cut).
    async fn try_answer(&self, request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body, retry_after })
    }

    /// A GET; `Err` when no answer came.
    pub async fn try_get(&self, path: &str) -> Result<Answer, reqwest::Error> {
        self.try_answer(self.http.get(format!("{}{path}", self.base))).await
    }

    /// A JSON POST; `Err` when no answer came.
    pub async fn try_post(&self, path: &str, body: &Value) -> Result<Answer, reqwest::Error> {
        self.try_answer(self.raw_request(path, Some("application/json"), body.to_string().into_bytes(), &[])).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.answer(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_raw(path, Some("application/json"), body.to_string().into_bytes(), &[]).await
    }

    /// A POST with full control over content type, body and headers.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.answer(self.raw_request(path, content_type, body, headers)).await
    }

    fn raw_request(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    /// A send with an `Idempotency-Key`; `None` when no answer came.
    pub async fn try_send(&self, from: &str, to: &str, content: &str, key: &str) -> Option<Answer> {
        let body = json!({"from": from, "to": to, "content": content}).to_string().into_bytes();
        let request = self.raw_request("/api/send", Some("application/json"), body, &[("Idempotency-Key", key)]);
        self.try_answer(request).await.ok()
    }

    /// Sends and expects 200; returns the id.
    pub async fn send(&self, from: &str, to: &str, content: &str) -> u64 {
        let answer = self.post("/api/send", &json!({"from": from, "to": to, "content": content})).await;
        assert_eq!(answer.status, 200, "send failed: {:?}", answer.body);
        answer.body["id"].as_u64().expect("id")
    }

    /// The unread inbox of `agent`; expects 200.
    pub async fn inbox(&self, agent: &str) -> Value {
        self.ok(&format!("/api/inbox?agent={agent}")).await
    }

    /// A GET that must answer 200.
    pub async fn ok(&self, path: &str) -> Value {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "GET {path}: {:?}", answer.body);
        answer.body
    }

    /// Every message in `agent`'s inbox, read or not, paging through it.
    pub async fn all_messages(&self, agent: &str) -> Vec<Value> {
        let mut messages: Vec<Value> = Vec::new();
        loop {
            let after = messages.last().map_or(0, |m| m["id"].as_u64().expect("id"));
            let page = self.ok(&format!("/api/inbox?agent={agent}&unread=false&limit=1000&after={after}")).await;
            let page = page["messages"].as_array().expect("messages").clone();
            if page.is_empty() {
                return messages;
            }
            messages.extend(page);
        }
    }

    /// Ids of the messages in an inbox or history answer.
    pub fn ids(body: &Value) -> Vec<u64> {
        body["messages"].as_array().expect("messages").iter().map(|m| m["id"].as_u64().expect("id")).collect()
    }

    pub async fn is_ready(&self) -> bool {
        self.http.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status().is_success())
    }
}

/// Reads server-sent events until `count` messages have arrived.
pub async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<Value> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event in time")
            .expect("stream readable")
            .expect("stream open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(String::from);
            if field("event:").as_deref() == Some("message") {
                let data: Value = serde_json::from_str(&field("data:").unwrap()).unwrap();
                assert_eq!(field("id:").unwrap(), data["id"].to_string());
                events.push(data);
            }
        }
    }
    events
}
