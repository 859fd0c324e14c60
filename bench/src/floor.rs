//! The HTTP floor: the same client sending the same `POST /api/send` to an
//! endpoint that stores nothing and wakes nobody, served by axum on one
//! thread of its own (as an adapter runs by default). What it costs is what
//! one HTTP request costs on this machine with this client and server stack,
//! before any work. Every message sent through clawbus costs that, plus a
//! JetStream publish and delivery (the raw side), plus a wake: together the
//! two floors estimate the most messages these cores could carry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::sync::oneshot;

use super::fleet::send_message;
use super::receipts::Receipts;
use super::target::{Arrivals, Attempt, Side, Target};

pub struct Floor {
    url: String,
    http: reqwest::Client,
    receipts: Receipts,
    /// The serving thread's `/proc/self/task/<tid>/stat`.
    stat: String,
    /// Dropping it ends the endpoint, and its thread with it.
    _stop: oneshot::Sender<()>,
}

/// The endpoint's state: the next id, and when each id was handled.
#[derive(Clone)]
struct Endpoint {
    next: Arc<AtomicU64>,
    receipts: Receipts,
}

impl Floor {
    /// Starts the endpoint on a thread of its own. The runtime and the
    /// listener are made here, so a failure is this call's error rather
    /// than a dead thread.
    pub fn start() -> anyhow::Result<Floor> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let listener = {
            let _runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let receipts = Receipts::default();
        let endpoint = Endpoint { next: Arc::new(AtomicU64::new(1)), receipts: receipts.clone() };
        let router = Router::new().route("/api/send", post(answer)).with_state(endpoint);
        let (stop, stopped) = oneshot::channel::<()>();
        let (tid_tx, tid) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("bench-http-floor".into()).spawn(move || {
            // SAFETY: gettid has no memory effects.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            runtime.block_on(async move {
                // Ends when `stop` is sent or dropped.
                let _ = axum::serve(listener, router).with_graceful_shutdown(async { drop(stopped.await) }).await;
            });
        })?;
        let tid = tid.recv()?;
        Ok(Floor {
            url: format!("http://{addr}/api/send"),
            http: clawbus_testkit::http_client(Duration::from_secs(30)),
            receipts,
            stat: format!("/proc/self/task/{tid}/stat"),
            _stop: stop,
        })
    }
}

/// Answers at once with a fresh id, as a send is answered, reading the
/// body but not parsing it.
async fn answer(State(endpoint): State<Endpoint>, _body: Bytes) -> impl IntoResponse {
    let id = endpoint.next.fetch_add(1, Ordering::Relaxed);
    endpoint.receipts.record(id, Instant::now());
    ([(CONTENT_TYPE, "application/json")], format!("{{\"id\":{id}}}"))
}

impl Target for Floor {
    const SIDE: Side = Side::Http;

    async fn send(&self) -> Attempt {
        send_message(&self.http, &self.url, ("agent-00", "agent-01"), 0).await
    }

    fn arrivals(&self, since: Instant, stored: &[(usize, u64)]) -> Arrivals {
        self.receipts.arrivals(since, stored)
    }

    /// The serving thread's CPU: what the endpoint itself costs, as the
    /// adapters' CPU is theirs.
    fn cpu(&self) -> Option<Duration> {
        clawbus_testkit::cpu_time(&self.stat)
    }
}
