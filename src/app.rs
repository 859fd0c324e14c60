//! One adapter's life: listen at once, reach NATS (retrying for as long as
//! it takes), provision, register, wake; on SIGTERM, finish what is in
//! flight and leave nothing half-done that a restart would not redo.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, Bus, Nats, Unavailable};
use crate::config::{Config, LocalAgent};
use crate::http::{self, AppState};
use crate::mailbox::Mailbox;
use crate::metrics::Metrics;
use crate::registry::{HEARTBEAT_INTERVAL, Registry};
use crate::wake::{WakeContext, Wakes};

/// Time wake calls in flight get to finish at shutdown.
const WAKE_GRACE: Duration = Duration::from_secs(3);
/// Longest pause between attempts to reach NATS at start-up.
const MAX_START_PAUSE: Duration = Duration::from_secs(5);

/// The parts that run once NATS has been reached.
struct Running {
    registry: Arc<Registry>,
    wakes: Wakes,
}

/// Runs the adapter until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let agents = config.local_agents()?;
    let metrics = Arc::new(Metrics::default());
    let state = AppState::new(&config, metrics.clone(), shutdown.clone());
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(host = %config.host, agents = agents.len(), "listening on http://{local}");
    let server = tokio::spawn(http::serve(listener, http::router(state.clone()), shutdown.clone()));

    let nats = bus::connect(&config).await?;
    let startup = Startup {
        config: &config,
        nats: nats.clone(),
        agents: &agents,
        state: &state,
        metrics,
        base_url: base_url(local),
    };
    let running = tokio::select! {
        running = startup.run() => Some(running),
        _ = shutdown.cancelled() => None,
    };
    if let Some(running) = &running {
        tokio::spawn(heartbeat(running.registry.clone(), shutdown.clone()));
    }
    shutdown.cancelled().await;
    tracing::info!("shutting down");
    let stop_wakes = async {
        if let Some(Running { registry, wakes }) = running {
            wakes.stop(WAKE_GRACE).await;
            // Shows this host's agents offline at once instead of after a timeout.
            let _ = tokio::time::timeout(Duration::from_secs(1), registry.heartbeat(false)).await;
        }
    };
    let (served, ()) = tokio::join!(server, stop_wakes);
    served.context("HTTP server task failed")?;
    let _ = tokio::time::timeout(Duration::from_secs(1), nats.client.flush()).await;
    tracing::info!("stopped");
    Ok(())
}

/// What start-up needs, for as many attempts as it takes.
struct Startup<'a> {
    config: &'a Config,
    nats: Nats,
    agents: &'a [LocalAgent],
    state: &'a AppState,
    metrics: Arc<Metrics>,
    base_url: String,
}

impl Startup<'_> {
    /// Retries until NATS is reachable and everything is set up.
    async fn run(&self) -> Running {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.attempt().await {
                Ok(running) => return running,
                Err(err) => {
                    tracing::warn!("not ready, retrying in {pause:?}: {err}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_START_PAUSE);
                }
            }
        }
    }

    /// Provisions, registers, starts waking; every step is idempotent.
    async fn attempt(&self) -> Result<Running, Unavailable> {
        let bus = Bus::provision(self.nats.clone(), self.config).await?;
        let registry = Arc::new(Registry::new(bus.clone(), self.config.host.clone()));
        let names: Vec<_> = self.agents.iter().map(|agent| agent.name.clone()).collect();
        let inboxes = registry.register(&names).await?;
        registry.heartbeat(true).await?;
        let mailbox = Mailbox::new(bus, registry.clone());
        let context = WakeContext {
            mailbox: mailbox.clone(),
            config: self.config.wake.clone(),
            metrics: self.metrics.clone(),
            base_url: self.base_url.clone(),
        };
        let wakes = Wakes::start(context, self.agents.iter().cloned().zip(inboxes).collect()).await?;
        self.state.set_mailbox(mailbox);
        tracing::info!(agents = names.len(), "ready");
        Ok(Running { registry, wakes })
    }
}

async fn heartbeat(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Err(err) = registry.heartbeat(true).await {
            tracing::debug!("heartbeat not sent: {err}");
        }
    }
}

/// The adapter's URL as local agents reach it (a wildcard listen address
/// is reached through loopback).
fn base_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}", SocketAddr::new(ip, local.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_replaces_wildcards_with_loopback() {
        assert_eq!(base_url("0.0.0.0:8091".parse().unwrap()), "http://127.0.0.1:8091");
        assert_eq!(base_url("[::]:8091".parse().unwrap()), "http://[::1]:8091");
        assert_eq!(base_url("10.1.2.3:80".parse().unwrap()), "http://10.1.2.3:80");
    }
}
