//! A stand-in model provider for the real OpenClaw gateway: the
//! OpenAI-compatible endpoints OpenClaw calls for a provider declared with
//! `api: "openai-completions"` (`POST /v1/chat/completions`, plain JSON or
//! server-sent chunks with `stream: true`, which is what OpenClaw 2026.9
//! sends; `GET /v1/models`).
//!
//! Every chat request goes to the test whole, through a channel, as a
//! [`Prompt`]: system prompt and every message included, so a test can look
//! for what OpenClaw put in front of the model. What the model answers is
//! scripted by marker: a request whose newest inbound message holds a
//! marker gets that marker's [`Answer`]; any other, the default text.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What OpenClaw's heartbeat prompt asks for when nothing needs attention,
/// and what the model says after a tool call it made.
pub const NO_REPLY: &str = "NO_REPLY";
const MODEL_ID: &str = "stand-in";
/// OpenClaw puts its own context in a user message that starts so; it is
/// not an inbound message.
const INTERNAL_CONTEXT: &str = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT";

/// How the model answers a request whose newest inbound message holds a
/// marker.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This assistant text.
    Text(String),
    /// A call of OpenClaw's `message` tool (through its `tool_call` entry
    /// point), action send, with this text; once the tool's result is in
    /// the request, [`NO_REPLY`].
    MessageTool(String),
    /// The first such request is never answered (the model "thinks" until
    /// the caller goes away); later ones get the next answer scripted for
    /// the marker, or the default text.
    StallOnce,
}

/// One chat request the gateway made.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// The whole request body.
    pub body: Value,
}

impl Prompt {
    fn messages(&self) -> impl Iterator<Item = &Value> {
        self.body["messages"].as_array().into_iter().flatten()
    }

    /// The text of the system (or developer) messages.
    pub fn system(&self) -> String {
        self.messages()
            .filter(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
            .map(text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The text of every message.
    pub fn everything(&self) -> String {
        self.messages().map(text).collect::<Vec<_>>().join("\n")
    }

    /// The user messages of the current turn: those after the last
    /// assistant message (OpenClaw sends the inbound message, then its own
    /// context, as two user messages).
    pub fn turn(&self) -> Vec<String> {
        self.messages().fold(Vec::new(), |mut turn, m| {
            match m["role"].as_str() {
                Some("assistant") => turn.clear(),
                Some("user") => turn.push(text(m)),
                _ => {}
            }
            turn
        })
    }

    /// Whether the current turn holds `marker`.
    pub fn turn_holds(&self, marker: &str) -> bool {
        self.turn().iter().any(|t| t.contains(marker))
    }

    /// The newest inbound message (the last user message that is not
    /// OpenClaw's context), and whether a tool result follows it.
    fn latest_inbound(&self) -> Option<(String, bool)> {
        let messages: Vec<&Value> = self.messages().collect();
        let i = messages
            .iter()
            .rposition(|m| m["role"] == "user" && !text(m).trim_start().starts_with(INTERNAL_CONTEXT))?;
        let answered = messages[i + 1..].iter().any(|m| m["role"] == "tool");
        Some((text(messages[i]), answered))
    }
}

/// The text of a message's content: a string, or a list of parts.
fn text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}

struct Shared {
    default: String,
    script: Mutex<Vec<(String, Answer)>>,
    prompts: mpsc::UnboundedSender<Prompt>,
}

/// The model server; stops when dropped.
pub struct Model {
    shared: Arc<Shared>,
    url: String,
    _stop: oneshot::Sender<()>,
}

impl Model {
    /// A model on a free loopback port answering `default` unless scripted;
    /// every chat request comes out of the [`Prompts`].
    pub async fn start(default: &str) -> (Model, Prompts) {
        let (prompts, received) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { default: default.into(), script: Mutex::default(), prompts });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the model");
        let url = format!("http://{}/v1", listener.local_addr().expect("model addr"));
        let router = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async { drop(stopped.await) }).await;
        });
        (Model { shared, url, _stop: stop }, Prompts { received, seen: Vec::new() })
    }

    /// The provider's base URL (`.../v1`), for the gateway's config.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests whose newest inbound message holds `marker` get `answer`
    /// (the first one scripted for it, when several are).
    pub fn answer(&self, marker: &str, answer: Answer) {
        self.shared.script.lock().unwrap().push((marker.into(), answer));
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "clawbus"}]}))
}

async fn complete(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    let prompt = Prompt { body };
    let _ = shared.prompts.send(prompt.clone());
    let inbound = prompt.latest_inbound();
    let reply = match inbound.as_ref().and_then(|(text, _)| shared.scripted(text)) {
        Some(Answer::Text(text)) => Reply::Text(text),
        Some(Answer::MessageTool(_)) if inbound.is_some_and(|(_, answered)| answered) => Reply::Text(NO_REPLY.into()),
        Some(Answer::MessageTool(text)) => Reply::Tool(text),
        // Until the gateway goes away, and the connection with it.
        Some(Answer::StallOnce) => return std::future::pending().await,
        None => Reply::Text(shared.default.clone()),
    };
    let model = prompt.body["model"].as_str().unwrap_or(MODEL_ID).to_owned();
    if prompt.body["stream"] == true { reply.stream(&model) } else { reply.whole(&model) }
}

impl Shared {
    /// The first answer scripted for a marker in `text`; an
    /// [`Answer::StallOnce`] is used up by the request it stalls.
    fn scripted(&self, text: &str) -> Option<Answer> {
        let mut script = self.script.lock().unwrap();
        let i = script.iter().position(|(marker, _)| text.contains(marker.as_str()))?;
        let (_, answer) = script[i].clone();
        if matches!(answer, Answer::StallOnce) {
            script.remove(i);
        }
        Some(answer)
    }
}

/// One answer, in either of the forms OpenClaw asks for.
enum Reply {
    Text(String),
    /// A `message` tool send with this text.
    Tool(String),
}

impl Reply {
    fn tool_call(text: &str) -> Value {
        let arguments = json!({"id": "message", "args": {"action": "send", "message": text}});
        json!({"id": format!("call_{}", unique()), "type": "function",
               "function": {"name": "tool_call", "arguments": arguments.to_string()}})
    }

    fn whole(&self, model: &str) -> Response {
        let (message, finish) = match self {
            Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
            Reply::Tool(text) => {
                (json!({"role": "assistant", "content": null, "tool_calls": [Reply::tool_call(text)]}), "tool_calls")
            }
        };
        Json(json!({
            "id": format!("chatcmpl-{}", unique()), "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": usage(),
        }))
        .into_response()
    }

    /// The chunks of a streamed answer, then the usage chunk
    /// `stream_options.include_usage` asks for, then `[DONE]`.
    fn stream(&self, model: &str) -> Response {
        let id = format!("chatcmpl-{}", unique());
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut chunks = match self {
            Reply::Text(text) => vec![
                chunk(json!({"role": "assistant", "content": ""}), None),
                chunk(json!({"content": text}), None),
                chunk(json!({}), Some("stop")),
            ],
            Reply::Tool(text) => {
                let mut call = Reply::tool_call(text);
                call["index"] = json!(0);
                vec![
                    chunk(json!({"role": "assistant", "content": null, "tool_calls": [call]}), None),
                    chunk(json!({}), Some("tool_calls")),
                ]
            }
        };
        chunks.push(json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                           "choices": [], "usage": usage()}));
        let mut events: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        events.push_str("data: [DONE]\n\n");
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], events)
            .into_response()
    }
}

fn usage() -> Value {
    json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
}

/// An id no other answer of this process has.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The chat requests as the gateway made them, in arrival order.
pub struct Prompts {
    received: mpsc::UnboundedReceiver<Prompt>,
    /// Every prompt taken out of the channel so far.
    seen: Vec<Prompt>,
}

impl Prompts {
    /// Waits up to `timeout` for a prompt (among those seen so far, or
    /// arriving) that satisfies `wanted`, or panics naming `what`.
    pub async fn wait_for(&mut self, what: &str, timeout: Duration, wanted: impl Fn(&Prompt) -> bool) -> Prompt {
        if let Some(found) = self.seen.iter().find(|p| wanted(p)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let prompt = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
                .expect("the model is running");
            self.seen.push(prompt.clone());
            if wanted(&prompt) {
                return prompt;
            }
        }
    }

    /// Every prompt received so far.
    pub fn seen(&mut self) -> &[Prompt] {
        while let Ok(prompt) = self.received.try_recv() {
            self.seen.push(prompt);
        }
        &self.seen
    }
}
