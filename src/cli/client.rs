//! `send`, `inbox`, `ack`, `history`, `tail`, `agents`: an operator's client
//! of an adapter's HTTP API. Tables for people, `--json` for scripts, and
//! exit codes scripts can rely on ([`Exit`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::Config;

/// How a client command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The adapter refused the request (4xx other than 404) or failed (5xx
    /// other than 503/504).
    Refused = 1,
    /// Bad arguments or config.
    Usage = 2,
    /// No adapter answered at the URL.
    Unreachable = 3,
    /// An unknown agent (404).
    NotFound = 4,
    /// NATS is unavailable right now (503/504): try again.
    Unavailable = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Which adapter to talk to, and how.
#[derive(clap::Args)]
pub struct Target {
    /// The adapter's base URL [default: http.listen of the config, else http://127.0.0.1:8091].
    #[arg(long, env = "CLAWBUS_URL", global = true)]
    url: Option<String>,
    /// An API token, when the adapter has tokens.
    #[arg(long, env = "CLAWBUS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub enum Request {
    /// Send a message (`--to '*'` broadcasts); `-` as content reads standard input.
    Send {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        content: String,
        #[arg(long, value_parser = ["normal", "high", "urgent"])]
        priority: Option<String>,
        #[arg(long)]
        reply_to: Option<u64>,
        /// Idempotency-Key: a retry with the same key stores nothing new.
        #[arg(long)]
        key: Option<String>,
    },
    /// An agent's unread messages (with `--all`, read ones too), oldest first.
    Inbox {
        agent: String,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        priority: Option<String>,
    },
    /// Acknowledge messages: `--ids 4,7`, `--up-to 9` or `--all`.
    Ack {
        agent: String,
        #[arg(long, value_delimiter = ',', required_unless_present_any = ["all", "up_to"], conflicts_with_all = ["all", "up_to"])]
        ids: Vec<u64>,
        #[arg(long, conflicts_with = "up_to")]
        all: bool,
        #[arg(long)]
        up_to: Option<u64>,
    },
    /// What an agent sent and received, read or not.
    History {
        agent: String,
        /// Only the conversation with this agent.
        #[arg(long)]
        with: Option<String>,
        /// RFC 3339 or unix seconds.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// Every registered agent: host, online, unread.
    Agents,
}

/// `clawbus tail`.
#[derive(clap::Args)]
pub struct Tail {
    /// Whose messages [default: the whole fleet, with the operator token].
    agent: Option<String>,
    /// Start after this id, replaying what came since.
    #[arg(long)]
    after: Option<u64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
}

/// Runs `request` against the adapter `target` (or the config) names.
pub fn run(target: &Target, config: Option<&Path>, request: Request) -> ExitCode {
    with_client(target, config, |client| async move {
        let (method, path, body) = request.http();
        match client.call(method, &path, body).await {
            Ok(answer) => {
                client.print(&request, &answer);
                Exit::Ok
            }
            Err(exit) => exit,
        }
    })
}

/// Follows the live stream of `tail.agent` until interrupted.
pub fn tail(target: &Target, config: Option<&Path>, tail: Tail) -> ExitCode {
    with_client(
        target,
        config,
        |client| async move { client.tail(tail.agent.as_deref(), tail.after, tail.count).await },
    )
}

fn with_client<F: Future<Output = Exit>>(
    target: &Target,
    config: Option<&Path>,
    then: impl FnOnce(Client) -> F,
) -> ExitCode {
    match Client::new(target, config) {
        Ok(client) => super::runtime().block_on(then(client)).into(),
        Err(why) => {
            eprintln!("clawbus: {why}");
            Exit::Usage.into()
        }
    }
}

impl Request {
    /// The HTTP request this command is.
    fn http(&self) -> (Method, String, Option<Value>) {
        let query = |pairs: Vec<(&str, Option<String>)>| {
            let kept: Vec<(&str, String)> = pairs.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            serde_urlencoded::to_string(kept).expect("a query string")
        };
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
                let unread = (!all).then(|| "true".to_owned()).or(Some("false".into()));
                let q = query(vec![
                    ("agent", Some(agent.clone())),
                    ("unread", unread),
                    ("limit", limit.map(|l| l.to_string())),
                    ("after", after.map(|a| a.to_string())),
                    ("priority", priority.clone()),
                ]);
                (Method::GET, format!("/api/inbox?{q}"), None)
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
                let q = query(vec![
                    ("agent", Some(agent.clone())),
                    ("with", with.clone()),
                    ("since", since.clone()),
                    ("until", until.clone()),
                    ("limit", limit.map(|l| l.to_string())),
                    ("after", after.map(|a| a.to_string())),
                ]);
                (Method::GET, format!("/api/history?{q}"), None)
            }
            Request::Agents => (Method::GET, "/api/agents".into(), None),
        }
    }
}

struct Client {
    base: String,
    token: Option<String>,
    json: bool,
    http: reqwest::Client,
}

impl Client {
    fn new(target: &Target, config: Option<&Path>) -> Result<Client, String> {
        let base = match &target.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let path = config.map_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH), Path::to_owned);
                let listen = if path.exists() {
                    Config::read_file(&path).map_err(|e| e.to_string())?.http.listen
                } else {
                    crate::config::HttpConfig::default().listen
                };
                crate::app::base_url(listen)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Client { base, token: target.token.clone(), json: target.json, http })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One request; the answer's JSON, or how the command should exit.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Exit> {
        let mut request = self.request(method, path).timeout(Duration::from_secs(60));
        if let Some(body) = body {
            let body = resolve_stdin(body)?;
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let text = response.text().await.map_err(|err| self.unreachable(&err))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(answer);
        }
        if self.json {
            println!("{answer}");
        }
        let message = answer["message"].as_str().unwrap_or("no message");
        eprintln!("clawbus: {status} {}: {message}", answer["error"].as_str().unwrap_or(""));
        Err(match status {
            StatusCode::NOT_FOUND => Exit::NotFound,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => Exit::Unavailable,
            _ => Exit::Refused,
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> Exit {
        eprintln!("clawbus: no adapter answered at {} ({err})", self.base);
        Exit::Unreachable
    }

    /// Follows the live stream, reconnecting from the last id seen.
    async fn tail(&self, agent: Option<&str>, after: Option<u64>, count: Option<u64>) -> Exit {
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
                    let answer: Value =
                        serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or_default();
                    eprintln!("clawbus: {status}: {}", answer["message"].as_str().unwrap_or("no message"));
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
                last = message["id"].as_u64().or(last);
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

    fn print(&self, request: &Request, answer: &Value) {
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

    fn print_messages(&self, messages: &[Value], header: bool) {
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

/// Server-sent events of a response, as message objects.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        Events { response, buffer: String::new() }
    }

    async fn next(&mut self) -> Option<Value> {
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

/// `content` of `-` means standard input.
fn resolve_stdin(mut body: Value) -> Result<Value, Exit> {
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
