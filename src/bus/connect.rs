//! The NATS connection: made once, kept alive through outages.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::connection::State;
use tokio::sync::watch;

use super::health::{self, Health};
use super::incarnation::Current;
use crate::config::Config;

/// A NATS connection and a count of the times it was (re)established.
#[derive(Clone)]
pub(crate) struct Nats {
    pub client: async_nats::Client,
    /// Bumped on every (re)connect: server-side state such as ephemeral
    /// consumers may be gone, and followers recreate theirs at once instead
    /// of waiting for missed heartbeats.
    pub(super) connects: watch::Receiver<u64>,
    /// Whether JetStream answers through the server connected to.
    pub(super) health: Arc<Health>,
    /// The stream's incarnation, as the health probe last read it.
    pub(super) incarnation: Arc<Current>,
}

/// Connects without waiting: the client keeps retrying in the background, so
/// the adapter can serve `/healthz` (and answer 503) while NATS is away.
pub(crate) async fn connect(config: &Config) -> anyhow::Result<Nats> {
    let nats = &config.nats;
    let (bump, connects) = watch::channel(0u64);
    // The client, once made, names the server in the connection's log lines.
    let made: Arc<OnceLock<async_nats::Client>> = Arc::default();
    let server = {
        let made = made.clone();
        let urls = config.nats.url.clone();
        move || match made.get() {
            Some(client) => {
                let info = client.server_info();
                format!("{}:{} ({})", info.host, info.port, info.server_name)
            }
            None => urls.clone(),
        }
    };
    let health = Health::new();
    let (picker, events) = (health.clone(), health.clone());
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("clawbus@{}", config.host))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .ping_interval(Duration::from_secs(10))
        .subscription_capacity(nats.reply_buffer)
        .connection_timeout(Duration::from_secs(3))
        .reconnect_to_server_callback(move |servers, _| {
            let picker = picker.clone();
            async move { picker.pick(&servers) }
        })
        .reconnect_delay_callback(|attempt| {
            let exp = attempt.min(6) as u32;
            Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let (bump, server, health) = (bump.clone(), server.clone(), events.clone());
            // One line per change of the connection's state.
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(server = %server(), "connected to NATS");
                        bump.send_modify(|count| *count += 1);
                    }
                    async_nats::Event::Disconnected => {
                        health.disconnected();
                        tracing::warn!(server = %server(), "lost the connection to NATS; reconnecting")
                    }
                    async_nats::Event::ServerError(err) => tracing::warn!(server = %server(), "NATS: {err}"),
                    other => tracing::info!(server = %server(), "NATS: {other}"),
                }
            }
        });
    if nats.least_privilege {
        // A host may subscribe only to its own reply subjects, so that no
        // host reads the answers meant for another.
        options = options.custom_inbox_prefix(inbox_prefix(&config.host));
    }
    if let Some(path) = &nats.credentials {
        options = options.credentials_file(path).await?;
    }
    if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &nats.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(ca) = &nats.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert, &nats.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let client = options.connect(nats.urls()).await?;
    let _ = made.set(client.clone());
    let incarnation = Arc::new(Current::default());
    let streams = [nats.stream.clone(), format!("KV_{}", config.bucket())];
    health::watch(client.clone(), health.clone(), incarnation.clone(), streams);
    Ok(Nats { client, connects, health, incarnation })
}

/// Why a one-off command did not reach NATS.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreached {
    /// The connection could not even be set up (a credentials file that
    /// cannot be read, say).
    #[error("cannot connect to NATS")]
    Setup(#[source] anyhow::Error),
    /// No server answered in time.
    #[error("NATS at {url} not reachable within {patience:?}")]
    Timeout { url: String, patience: Duration },
}

/// How often [`connect_within`] looks whether the connection is up.
const CONNECTED_POLL: Duration = Duration::from_millis(50);

/// Connects, and waits until connected for at most `patience`. The adapter
/// serves while NATS is away ([`connect`] does not wait); a one-off command
/// (`setup`, `doctor`, `import`) can do nothing until it is reached, and
/// should say so rather than wait for ever.
pub(crate) async fn connect_within(config: &Config, patience: Duration) -> Result<Nats, Unreached> {
    let nats = connect(config).await.map_err(Unreached::Setup)?;
    let connected = async {
        while nats.client.connection_state() != State::Connected {
            tokio::time::sleep(CONNECTED_POLL).await;
        }
    };
    tokio::time::timeout(patience, connected)
        .await
        .map_err(|_| Unreached::Timeout { url: config.nats.url.clone(), patience })?;
    Ok(nats)
}

/// The reply subjects of `host`'s adapter (its NATS user may subscribe to
/// these and no others).
pub(crate) fn inbox_prefix(host: &str) -> String {
    format!("_INBOX_{host}")
}
