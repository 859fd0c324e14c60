//! One adapter's life: listen at once, reach NATS (retrying for as long as
//! it takes), provision, register, wake; keep the registry and JetStream's
//! objects in order while running; on shutdown, finish what is in flight and
//! leave nothing half-done that a restart would not redo.
//!
//! Tests start it in-process: [`App::bind`], [`App::local_addr`],
//! [`App::run`].

pub(crate) mod stream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::{self, Bus, Missing, Nats};
use crate::config::{Config, LocalAgent};
use crate::embedded::Embedded;
use crate::http::{self, AppState};
use crate::mailbox::{Mailbox, Rules};
use crate::metrics::Metrics;
use crate::names::AgentName;
use crate::policy::Policy;
use crate::registry::{HEARTBEAT_INTERVAL, HostError, HostTaken, Registry};
use crate::wake::{WakeContext, Wakes};

/// Time wake calls in flight get to finish at shutdown.
const WAKE_GRACE: Duration = Duration::from_secs(3);
/// Longest pause between attempts to reach NATS at start-up.
const MAX_START_PAUSE: Duration = Duration::from_secs(5);
/// Deadline of each registry write at shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// An adapter whose HTTP listener is bound, ready to run.
pub struct App {
    config: Config,
    agents: Vec<LocalAgent>,
    listener: TcpListener,
}

/// The parts that run once NATS has been reached.
struct Running {
    bus: Bus,
    registry: Arc<Registry>,
    wakes: Wakes,
}

impl App {
    /// Binds `http.listen` (port 0: any free port).
    pub async fn bind(config: Config) -> anyhow::Result<App> {
        let agents = config.local_agents()?;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.http.listen))?;
        Ok(App { config, agents, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Runs the adapter until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App { config, agents, listener } = self;
        let local = listener.local_addr()?;
        let names: Vec<String> = agents.iter().map(|agent| agent.name.to_string()).collect();
        let metrics = Arc::new(Metrics::new(&names));
        let state = AppState::new(&config, metrics.clone(), shutdown.clone());
        tracing::info!(host = %config.host, agents = agents.len(), "listening on http://{local}");
        let router = http::router(state.clone());
        let server = tokio::spawn(http::serve(listener, router, shutdown.clone(), config.http.max_connections));

        let embedded = match config.nats.embedded {
            true => Some(Embedded::start(&config.nats, &config.host).await?),
            false => None,
        };
        let nats = bus::connect(&config).await?;
        let startup = Startup {
            config: &config,
            nats: nats.clone(),
            agents: &agents,
            state: &state,
            metrics,
            base_url: base_url(local),
        };
        let (running, refused) = tokio::select! {
            started = startup.run() => match started {
                Ok(running) => (Some(Arc::new(running)), None),
                Err(taken) => {
                    // Nothing of the host's was written: the other adapter's
                    // records are left as they are.
                    shutdown.cancel();
                    (None, Some(taken))
                }
            },
            _ = shutdown.cancelled() => (None, None),
        };
        let names: Vec<AgentName> = agents.iter().map(|agent| agent.name.clone()).collect();
        let upkeep = running
            .as_ref()
            .map(|running| tokio::spawn(upkeep(running.clone(), config.clone(), names.clone(), shutdown.clone())));
        shutdown.cancelled().await;
        tracing::info!("shutting down");
        let stop_wakes = async {
            let held = match upkeep {
                Some(upkeep) => upkeep.await.unwrap_or(true),
                None => true,
            };
            let Some(Ok(Running { registry, wakes, .. })) = running.map(Arc::try_unwrap) else { return };
            wakes.stop(WAKE_GRACE).await;
            if !held {
                return;
            }
            // Agents taken over from a live host go back to it, and this
            // host's agents show offline at once instead of after a timeout.
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, registry.release(&names)).await;
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, registry.heartbeat(false)).await;
        };
        let (served, ()) = tokio::join!(server, stop_wakes);
        served.context("HTTP server task failed")?;
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, nats.client.flush()).await;
        if let Some(embedded) = embedded {
            embedded.stop().await;
        }
        tracing::info!("stopped");
        match refused {
            Some(taken) => Err(taken.into()),
            None => Ok(()),
        }
    }
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
    /// Retries until NATS is reachable and everything is set up; refused
    /// while another adapter runs as this host.
    async fn run(&self) -> Result<Running, HostTaken> {
        let mut pause = Duration::from_millis(100);
        let mut last_reason = String::new();
        loop {
            match self.attempt().await {
                Ok(running) => return Ok(running),
                Err(HostError::Taken(taken)) => return Err(taken),
                Err(HostError::Unavailable(err)) => {
                    // Each reason once; repeats of it only at debug level.
                    let reason = err.to_string();
                    if reason != last_reason {
                        tracing::warn!(error = &err as &dyn std::error::Error, "not ready, retrying");
                    } else {
                        tracing::debug!(error = &err as &dyn std::error::Error, "not ready, retrying in {pause:?}");
                    }
                    last_reason = reason;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_START_PAUSE);
                }
            }
        }
    }

    fn rules(&self) -> Rules {
        let senders: HashSet<AgentName> = self.config.http.senders.iter().cloned().collect();
        let own = || self.agents.iter().map(|agent| agent.name.clone()).chain(senders.iter().cloned()).collect();
        Rules {
            writes_only_for: self.config.nats.least_privilege.then(own),
            senders: senders.clone(),
            limits: self.config.limits,
        }
    }

    /// Provisions, takes the host, registers, starts waking; every step is
    /// idempotent.
    async fn attempt(&self) -> Result<Running, HostError> {
        let bus = stream::open(self.nats.clone(), self.config).await?;
        let registry = Arc::new(Registry::new(bus.clone(), self.config.host.clone()));
        let names: Vec<_> = self.agents.iter().map(|agent| agent.name.clone()).collect();
        // Before anything of the host's is written: a second adapter with
        // this host name must not touch the first one's records.
        registry.claim_host().await?;
        let registered = registry.register(&policies(self.config)).await?;
        let context = WakeContext {
            bus: bus.clone(),
            config: self.config.wake.clone(),
            metrics: self.metrics.clone(),
            base_url: self.base_url.clone(),
            host: self.config.host.clone(),
            instance: registry.instance().to_owned(),
        };
        let wakes = Wakes::start(context, self.agents.iter().cloned().zip(registered).collect()).await?;
        self.state.set_mailbox(Mailbox::new(bus.clone(), registry.clone(), self.rules()));
        tracing::info!(agents = names.len(), "ready");
        Ok(Running { bus, registry, wakes })
    }
}

/// Every heartbeat: report alive, re-create the stream or bucket if they
/// were deleted, and settle which listed agents this host wakes. Returns
/// false if another adapter took the host over (this one then stops waking
/// and writes none of the host's records again).
async fn upkeep(running: Arc<Running>, config: Config, names: Vec<AgentName>, shutdown: CancellationToken) -> bool {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut stream_gone = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return true,
        }
        tokio::select! {
            tended = tend(&running, &config, &names, &mut stream_gone) => match tended {
                Ok(()) => {}
                Err(HostError::Unavailable(err)) => {
                    tracing::debug!(error = &err as &dyn std::error::Error, "upkeep skipped");
                }
                Err(HostError::Taken(taken)) => {
                    tracing::error!(
                        "another adapter took over host \"{}\": this one stops waking its agents and writing \
                         their wake records. {taken}",
                        config.host
                    );
                    running.wakes.abandon();
                    return false;
                }
            },
            _ = shutdown.cancelled() => return true,
        }
    }
}

/// One heartbeat's upkeep. `stream_gone`: since when the stream has been
/// missing, as this adapter noticed.
async fn tend(
    running: &Running,
    config: &Config,
    names: &[AgentName],
    stream_gone: &mut Option<Instant>,
) -> Result<(), HostError> {
    let Running { bus, registry, wakes } = running;
    let missing = bus.missing().await?;
    if missing != Some(Missing::Stream) {
        *stream_gone = None;
    }
    match missing {
        None => {}
        Some(missing) if config.nats.least_privilege => {
            tracing::error!("the {missing} was deleted; this host may not re-create it: run `clawbus setup`");
        }
        Some(Missing::Bucket) => {
            tracing::error!("the state bucket was deleted behind the adapter's back; re-creating it");
            bus.create_bucket(config).await?;
            registry.register(&policies(config)).await?;
        }
        Some(Missing::Stream) => match stream_gone {
            None => {
                tracing::error!(
                    "the message stream was deleted behind the adapter's back; re-creating it in {:?}, \
                     once every adapter has said which ids it knows of",
                    stream::RECREATE_AFTER
                );
                *stream_gone = Some(Instant::now());
            }
            Some(since) if since.elapsed() >= stream::RECREATE_AFTER => {
                let first = stream::create(bus, config).await?;
                tracing::warn!(first, "re-created the message stream");
                registry.register(&policies(config)).await?;
            }
            Some(_) => {}
        },
    }
    // A reading missed leaves the last one in use: it is carried forward
    // by the monotonic clock, and is no reason to skip the heartbeat.
    if let Err(err) = bus.read_clock().await {
        tracing::debug!(error = &err as &dyn std::error::Error, "the server's time was not read this heartbeat");
    }
    registry.heartbeat(true).await?;
    for (name, serving) in names.iter().zip(registry.serving(names).await?) {
        wakes.set_serving(name, serving).await?;
    }
    Ok(())
}

/// This host's agents with their own settings (conversation safety, and how
/// they are reached).
fn policies(config: &Config) -> Vec<(AgentName, Policy)> {
    config.agents.iter().map(|agent| (agent.name.clone(), agent.policy(config.wake.mode))).collect()
}

/// The adapter's URL as local agents reach it (a wildcard listen address
/// is reached through loopback).
pub(crate) fn base_url(local: SocketAddr) -> String {
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
