//! The HTTP API of API.md, served under `/api/` and, as the old bus did,
//! without the prefix.

mod auth;
mod console;
mod error;
mod input;
mod origin;
mod routes;
mod server;
mod streams;

use std::sync::{Arc, OnceLock};

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;

use crate::config::Config;
use crate::fleet::FleetView;
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;

use error::ApiError;
pub(crate) use server::serve;

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

struct Shared {
    host: String,
    max_message_bytes: usize,
    tokens: auth::Tokens,
    /// No tokens configured: the API answers whoever reaches it.
    open: bool,
    /// Names besides loopback ones that open-mode requests may address.
    hosts: Vec<String>,
    streams: Arc<streams::StreamCaps>,
    metrics: Arc<Metrics>,
    /// Set once NATS is reached and the stream is provisioned; until then
    /// the API answers 503.
    mailbox: OnceLock<(Mailbox, FleetView)>,
    shutdown: CancellationToken,
}

impl AppState {
    pub(crate) fn new(config: &Config, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Self {
        AppState(Arc::new(Shared {
            host: config.host.clone(),
            max_message_bytes: config.http.max_message_bytes,
            tokens: auth::Tokens::new(&config.http),
            open: config.http.is_open(),
            hosts: config.http.hosts.clone(),
            streams: streams::StreamCaps::new(config.http.max_streams, config.http.max_streams_per_agent),
            metrics,
            mailbox: OnceLock::new(),
            shutdown,
        }))
    }

    pub(crate) fn set_mailbox(&self, mailbox: Mailbox) {
        let fleet = FleetView::new(mailbox.clone());
        let _ = self.0.mailbox.set((mailbox, fleet));
    }

    fn mailbox(&self) -> Result<&Mailbox, ApiError> {
        Ok(&self.started()?.0)
    }

    fn fleet(&self) -> Result<&FleetView, ApiError> {
        Ok(&self.started()?.1)
    }

    fn started(&self) -> Result<&(Mailbox, FleetView), ApiError> {
        self.0.mailbox.get().ok_or_else(|| ApiError::unavailable("starting: not connected to NATS yet"))
    }

    fn host(&self) -> &str {
        &self.0.host
    }

    fn max_message_bytes(&self) -> usize {
        self.0.max_message_bytes
    }

    fn tokens(&self) -> &auth::Tokens {
        &self.0.tokens
    }

    fn is_open(&self) -> bool {
        self.0.open
    }

    fn hosts(&self) -> &[String] {
        &self.0.hosts
    }

    fn streams(&self) -> &Arc<streams::StreamCaps> {
        &self.0.streams
    }

    fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }
}

/// Counts every routed request by route (the same with and without `/api`)
/// and status, with its latency (for a stream: until it started).
async fn measure(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map(|path| path.as_str().trim_start_matches("/api").to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.unwrap_or_else(|| "other".into());
    state.metrics().request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// Names the stream's incarnation on every API answer (`Clawbus-Stream`):
/// a client that keeps message ids, as the channel plugin does, learns when
/// the stream was created again and its ids name other messages (see
/// `bus::Incarnation`).
async fn stamp(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let incarnation = state.mailbox().ok().and_then(|mailbox| mailbox.bus().incarnation());
    if let Some(value) = incarnation.and_then(|i| HeaderValue::from_str(i.as_str()).ok()) {
        response.headers_mut().insert(STREAM_HEADER, value);
    }
    response
}

/// The response header that names the stream's incarnation.
const STREAM_HEADER: &str = "clawbus-stream";

pub(crate) fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/send", post(routes::send::send))
        .route("/inbox", get(routes::inbox::inbox))
        .route("/ack", post(routes::ack::ack))
        .route("/history", get(routes::history::history))
        .route("/agents", get(routes::agents::agents))
        .route("/stats", get(routes::agents::stats))
        .route("/messages/{id}", get(routes::messages::message))
        .route("/threads/{id}/release", post(routes::threads::release))
        .route("/stream", get(routes::stream::stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), origin::check))
        .route_layer(middleware::from_fn_with_state(state.clone(), stamp));
    Router::new()
        .nest("/api", api.clone())
        // Compatibility: see docs/architecture.md#compatibility
        .merge(api)
        .route("/console", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), measure))
        // A bug in a handler is answered 500, never a cut connection.
        .layer(CatchPanicLayer::custom(|_| ApiError::internal().into_response()))
        .with_state(state)
}
