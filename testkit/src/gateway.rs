//! A stand-in OpenClaw gateway: `POST /hooks/wake` and `POST /hooks/agent`
//! as API.md and OpenClaw's hook docs describe them (bearer or
//! `x-openclaw-token` auth, 401 as plain text, 429 with `Retry-After` after
//! 20 failed authentications in a minute, 400 for a bad payload or unknown
//! `agentId`, 256 KiB body limit, POST only, `queued`/`coalesced`, one agent
//! run per `Idempotency-Key`). It
//! records every call with its arrival time, and can be scripted to fail,
//! answer slowly, answer what is not a wake (a page, `{"ok": false}`, a
//! redirect to a login page it serves), or go away entirely (connection
//! refused).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::netns::Host;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// OpenClaw keeps this many pending system events per session.
const MAX_PENDING: usize = 20;
const BODY_LIMIT: usize = 256 * 1024;
const AUTH_FAILURES_BEFORE_THROTTLE: usize = 20;

/// One request the gateway received.
#[derive(Clone, Debug)]
pub struct Call {
    /// `wake` or `agent`.
    pub hook: String,
    pub agent_id: Option<String>,
    /// `text` of a wake, `message` of an agent call.
    pub text: String,
    pub token: Option<String>,
    pub idempotency_key: Option<String>,
    /// The newest message id the call covers (`Clawbus-Up-To`).
    pub up_to: Option<u64>,
    /// The whole JSON body (`Null` if it was not JSON).
    pub body: Value,
    pub arrived: Instant,
    pub arrived_wall: SystemTime,
    /// The status the gateway answered; 0 while the call is in flight.
    pub status: u16,
    /// `queued` or `coalesced` for answered wakes; `started`, or
    /// `duplicate` for a repeated `Idempotency-Key`, for agent calls.
    pub outcome: Option<String>,
}

impl Call {
    /// The ids of the messages an agent call hands over (one JSON object
    /// per line of its text), oldest first; none for a wake.
    pub fn message_ids(&self) -> Vec<u64> {
        self.text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()?["id"].as_u64()).collect()
    }
}

/// A scripted answer for the next call.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answer this status (503 as while the gateway restarts).
    Status(u16),
    /// Answer this status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Wait, then answer normally.
    Delay(Duration),
    /// 200 with an HTML page, as a proxy or a web UI in front of the hooks.
    Page,
    /// 200 `{"ok": false}`.
    NotOk,
    /// 302 to the gateway's `GET /login` page, which answers 200 HTML.
    Redirect,
}

const PAGE: &str = "<!doctype html><html><body>Sign in</body></html>";

#[derive(Default)]
struct Shared {
    token: String,
    agent_ids: Mutex<Option<HashSet<String>>>,
    script: Mutex<VecDeque<Reply>>,
    /// Answer for every call while set (see [`Gateway::fail_with`]).
    fault: Mutex<Option<Reply>>,
    /// `GET /login` requests: redirects followed.
    logins: Mutex<usize>,
    delay: Mutex<Duration>,
    calls: Mutex<Vec<Call>>,
    auth_failures: Mutex<VecDeque<Instant>>,
    pending: Mutex<HashMap<String, VecDeque<String>>>,
    /// `Idempotency-Key`s of agent runs already started, with their run ids.
    runs: Mutex<HashMap<String, String>>,
}

pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The lab host whose loopback it listens on, if any.
    host: Option<Host>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Gateway {
    /// A gateway on a free loopback port accepting `token`.
    pub async fn start(token: &str) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        Gateway::serving(token, listener, None)
    }

    /// A gateway on the loopback of `host`, a lab host (where the adapter
    /// that calls it runs), accepting `token`.
    pub async fn start_on(host: &Host, token: &str) -> Gateway {
        let listener = host.listen_loopback().expect("bind gateway on its lab host");
        Gateway::serving(token, from_std(listener), Some(host.clone()))
    }

    fn serving(token: &str, listener: TcpListener, host: Option<Host>) -> Gateway {
        let shared = Arc::new(Shared { token: token.into(), ..Shared::default() });
        let addr = listener.local_addr().expect("gateway addr");
        let mut gateway = Gateway { shared, addr, host, server: None };
        gateway.serve(listener);
        gateway
    }

    fn serve(&mut self, listener: TcpListener) {
        let router = Router::new()
            .route("/hooks/wake", post(wake))
            .route("/hooks/agent", post(agent))
            .route("/login", get(login))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self.shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let listener = listener.tap_io(|socket| {
            let _ = socket.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).with_graceful_shutdown(async { drop(stopped.await) }).await;
        });
        self.server = Some((stop, task));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// Only these `agentId`s exist (400 for others). Default: any.
    pub fn only_agents(&self, ids: &[&str]) {
        *self.shared.agent_ids.lock().unwrap() = Some(ids.iter().map(|id| id.to_string()).collect());
    }

    /// Answers for the next calls, in order; then normal answers resume.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// Every call gets `reply` until called again with `None`.
    pub fn fail_with(&self, reply: Option<Reply>) {
        *self.shared.fault.lock().unwrap() = reply;
    }

    /// How many times the login page a [`Reply::Redirect`] points to was
    /// fetched.
    pub fn logins(&self) -> usize {
        *self.shared.logins.lock().unwrap()
    }

    /// Every answer waits this long (a slow gateway).
    pub fn set_delay(&self, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
    }

    /// Every call received, in arrival order (answered or still in flight).
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// Calls answered as the contract says a wake or agent run is taken:
    /// 200 with `{"ok": true}` and an outcome.
    pub fn wakes(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.status == 200 && c.outcome.is_some()).collect()
    }

    /// Calls answered 200 for one `agentId`.
    pub fn wakes_for(&self, agent_id: &str) -> Vec<Call> {
        self.wakes().into_iter().filter(|c| c.agent_id.as_deref() == Some(agent_id)).collect()
    }

    /// Goes away: connections are refused until [`Gateway::resume`].
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }

    /// Comes back on the same port, keeping what it recorded.
    pub async fn resume(&mut self) {
        let listener = match &self.host {
            Some(host) => {
                let addr = self.addr;
                from_std(host.enter(move || std::net::TcpListener::bind(addr)).expect("rebind gateway port"))
            }
            None => TcpListener::bind(self.addr).await.expect("rebind gateway port"),
        };
        self.serve(listener);
    }
}

/// A listener made by a thread in a lab host, for this runtime.
fn from_std(listener: std::net::TcpListener) -> TcpListener {
    listener.set_nonblocking(true).expect("non-blocking listener");
    TcpListener::from_std(listener).expect("listener for the runtime")
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some((stop, _)) = self.server.take() {
            let _ = stop.send(());
        }
    }
}

async fn wake(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&shared, "wake", &headers, &body).await
}

async fn agent(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(&shared, "agent", &headers, &body).await
}

async fn login(State(shared): State<Arc<Shared>>) -> Response {
    *shared.logins.lock().unwrap() += 1;
    page()
}

fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

fn text_answer(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

fn bad_request(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"ok": false, "error": error}))).into_response()
}

async fn handle(shared: &Shared, hook: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let arrived = (Instant::now(), SystemTime::now());
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-openclaw-token").and_then(|v| v.to_str().ok()))
        .map(String::from);
    let payload: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| payload.as_ref().and_then(|p| p.get(name)).and_then(Value::as_str).map(String::from);
    let text_field = if hook == "wake" { "text" } else { "message" };
    let mut call = Call {
        hook: hook.into(),
        agent_id: field("agentId"),
        text: field(text_field).unwrap_or_default(),
        token: token.clone(),
        idempotency_key: headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(String::from),
        up_to: headers.get("clawbus-up-to").and_then(|v| v.to_str().ok()?.parse().ok()),
        body: payload.clone().unwrap_or_default(),
        arrived: arrived.0,
        arrived_wall: arrived.1,
        status: 0,
        outcome: None,
    };
    let index = {
        let mut calls = shared.calls.lock().unwrap();
        calls.push(call.clone());
        calls.len() - 1
    };
    let response = answer(shared, hook, token, payload.as_ref(), &mut call).await;
    call.status = response.status().as_u16();
    shared.calls.lock().unwrap()[index] = call;
    response
}

async fn answer(
    shared: &Shared,
    hook: &str,
    token: Option<String>,
    payload: Option<&Value>,
    call: &mut Call,
) -> Response {
    if token.as_deref() != Some(shared.token.as_str()) {
        let mut failures = shared.auth_failures.lock().unwrap();
        failures.retain(|at| at.elapsed() < Duration::from_secs(60));
        if failures.len() >= AUTH_FAILURES_BEFORE_THROTTLE {
            let mut response = text_answer(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            response.headers_mut().insert(header::RETRY_AFTER, 60.into());
            return response;
        }
        failures.push_back(Instant::now());
        return text_answer(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    shared.auth_failures.lock().unwrap().clear();
    let Some(payload) = payload.filter(|p| p.is_object()) else {
        return bad_request("invalid JSON");
    };
    if call.text.trim().is_empty() {
        return bad_request(if hook == "wake" { "text required" } else { "message required" });
    }
    if hook == "wake" && !matches!(payload.get("mode").and_then(Value::as_str), None | Some("now" | "next-heartbeat")) {
        return bad_request("mode must be now or next-heartbeat");
    }
    let known = shared.agent_ids.lock().unwrap().clone();
    if let (Some(known), Some(id)) = (known, &call.agent_id)
        && !known.contains(id)
    {
        return bad_request("unknown agentId");
    }
    let fault = shared.fault.lock().unwrap().clone();
    let scripted = fault.or_else(|| shared.script.lock().unwrap().pop_front());
    match scripted {
        Some(Reply::Status(code)) => return scripted_status(code, None),
        Some(Reply::RetryAfter(code, seconds)) => return scripted_status(code, Some(seconds)),
        Some(Reply::Delay(delay)) => tokio::time::sleep(delay).await,
        Some(Reply::Page) => return page(),
        Some(Reply::NotOk) => return Json(json!({"ok": false})).into_response(),
        Some(Reply::Redirect) => return (StatusCode::FOUND, [(header::LOCATION, "/login")]).into_response(),
        None => {}
    }
    let delay = *shared.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let session = call.agent_id.clone().unwrap_or_else(|| "main".into());
    if hook == "agent" {
        // A repeated key starts no second run: the first run's id comes back.
        let fresh = format!("run-{}", shared.calls.lock().unwrap().len());
        let run = match &call.idempotency_key {
            Some(key) => shared.runs.lock().unwrap().entry(key.clone()).or_insert(fresh.clone()).clone(),
            None => fresh.clone(),
        };
        call.outcome = Some(if run == fresh { "started" } else { "duplicate" }.into());
        return Json(json!({"ok": true, "runId": run})).into_response();
    }
    let mut pending = shared.pending.lock().unwrap();
    let queue = pending.entry(session).or_default();
    let outcome = if queue.back() == Some(&call.text) {
        "coalesced"
    } else {
        queue.push_back(call.text.clone());
        if queue.len() > MAX_PENDING {
            queue.pop_front();
        }
        "queued"
    };
    call.outcome = Some(outcome.into());
    Json(json!({"ok": true, "mode": "now", "eventOutcome": outcome})).into_response()
}

fn scripted_status(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).expect("valid status");
    let mut response = (status, Json(json!({"ok": false, "error": "gateway_unavailable"}))).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    response
}
