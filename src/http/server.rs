//! The HTTP listener: hyper with the limits API.md promises.
//!
//! Served by hand rather than through `axum::serve` for two settings the
//! latter does not expose: the 16 KiB cap on request heads (431 beyond) and
//! the header read timeout. Every connection also gets `TCP_NODELAY`:
//! without it a reply written in two pieces waits ~40 ms for a delayed ACK.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Largest request head (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `router` until `shutdown`, then lets in-flight requests finish.
/// Past `max_connections` open connections, new ones are closed at once:
/// idle or streaming clients cannot grow the adapter without bound.
pub(crate) async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken, max_connections: usize) {
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut http = http1::Builder::new();
    http.max_buf_size(MAX_HEAD_BYTES).header_read_timeout(HEADER_TIMEOUT).timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("{max_connections} connections open: closing a new one");
            continue;
        };
        if let Err(err) = socket.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set: {err}");
        }
        let connection = http.serve_connection(TokioIo::new(socket), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("connection ended: {err}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; closing them");
    }
}
