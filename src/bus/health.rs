//! Whether JetStream answers through the server this adapter is connected
//! to, and moving to another server when it does not.
//!
//! A NATS connection can be perfectly alive while the server behind it is
//! useless: a node whose cluster routes are cut, or that sits on the
//! minority side of a partition, keeps its clients connected and answers
//! their pings, but cannot store anything; a paused node (a stopped VM, a
//! swap storm) keeps its TCP connections open and answers nothing, and the
//! client's own pings notice only after a couple of minutes. So twice a
//! second the adapter asks JetStream, through its connection, for the state
//! of the message stream and of the state bucket, and checks that each has
//! a leader that hears a quorum of its replicas. When no probe has had a
//! good answer for 3 s, the adapter stops taking sends (refused at once with
//! 503, not after the publish timeout); after 5 s it gives the server up,
//! avoids it for a while, and reconnects to another server of `nats.url`. A
//! good answer makes it ready again, wherever it is connected.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ReconnectToServer, Server, ServerAddr};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

use super::incarnation::Current;

/// How often JetStream is asked. Probes overlap: a slow answer does not
/// delay the next question.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Longest wait for one probe's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long without a single good answer before the adapter stops taking
/// sends (503 at once). A healthy leader answers in milliseconds, and a
/// loaded host or a fsync stall delays one answer, not every answer.
const NOT_READY_AFTER: Duration = Duration::from_secs(3);
/// How long without a good answer before the server is given up. Longer:
/// while the cluster elects a new leader (seconds) no server answers, and
/// moving would not help.
const GIVE_UP_AFTER: Duration = Duration::from_secs(5);
/// Failed connection attempts after which a server is no better than one
/// given up: from there on, such servers take turns.
const TRIES_BEFORE_TURNS: usize = 2;
/// How long a server that was given up is avoided when picking another.
const AVOID_FOR: Duration = Duration::from_secs(30);
/// A replica not heard from for this long does not count towards quorum
/// (Raft heartbeats are sent every second).
const SILENT_REPLICA: Duration = Duration::from_millis(2500);

/// The verdict of the last probes, for `/readyz`, `/metrics`, `/api/stats`.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Status {
    /// The server connected to (its `server_name`); `None` while
    /// disconnected.
    pub server: Option<String>,
    /// False once JetStream has not answered properly for a few seconds.
    pub ready: bool,
    /// Why it is not ready (the last probe's failure).
    pub reason: Option<String>,
    /// Times this adapter gave up a server and moved to another.
    pub moves: u64,
}

/// Shared between the probe task, the server picker and the bus.
pub(super) struct Health {
    status: Mutex<Status>,
    picker: Mutex<Picker>,
}

impl Health {
    pub(super) fn new() -> Arc<Health> {
        Arc::new(Health {
            status: Mutex::new(Status { server: None, ready: true, reason: None, moves: 0 }),
            picker: Mutex::new(Picker { turn: fastrand::usize(..), last: None, avoided: Vec::new(), pool: 0 }),
        })
    }

    pub(super) fn status(&self) -> Status {
        self.status.lock().expect("health lock").clone()
    }

    /// `Err(why)` while JetStream does not answer through this server.
    pub(super) fn check(&self) -> Result<(), String> {
        let status = self.status.lock().expect("health lock");
        match status.ready {
            true => Ok(()),
            false => Err(status.reason.clone().unwrap_or_default()),
        }
    }

    /// Picks the server for the next connection attempt: one not given up
    /// lately and that has not failed to connect lately, if any; otherwise
    /// the servers take turns, so that a server given up is tried again
    /// before a dead one is tried over and over, and a node that was out of
    /// reach (a partition that healed) gets its turn again. Turns start at
    /// a random server, so that adapters spread over the nodes.
    pub(super) fn pick(&self, servers: &[Server]) -> Option<ReconnectToServer> {
        let mut picker = self.picker.lock().expect("health lock");
        picker.pool = servers.len();
        let now = Instant::now();
        picker.avoided.retain(|(_, since)| now.duration_since(*since) < AVOID_FOR);
        let avoided = |server: &Server| picker.avoided.iter().any(|(addr, _)| same(addr, &server.addr));
        let rank = |server: &Server| {
            server.failed_attempts.min(TRIES_BEFORE_TURNS) + if avoided(server) { TRIES_BEFORE_TURNS } else { 0 }
        };
        let best = servers.iter().map(rank).min()?;
        let candidates: Vec<&Server> = servers.iter().filter(|server| rank(server) == best).collect();
        let chosen = candidates[picker.turn % candidates.len()].addr.clone();
        picker.turn = picker.turn.wrapping_add(1);
        picker.last = Some(chosen.clone());
        Some(ReconnectToServer { addr: chosen, delay: None })
    }

    fn connected(&self, server: String) {
        let mut status = self.status.lock().expect("health lock");
        status.server = Some(server);
    }

    /// The connection dropped: no server until the client is connected
    /// again (it reconnects by itself).
    pub(super) fn disconnected(&self) {
        self.status.lock().expect("health lock").server = None;
    }

    /// Records a good answer: ready.
    fn answered(&self) {
        let mut status = self.status.lock().expect("health lock");
        if !status.ready {
            tracing::info!(server = status.server.as_deref().unwrap_or("?"), "JetStream answers again");
        }
        status.ready = true;
        status.reason = None;
    }

    /// Records that no good answer came for too long, and why (the last
    /// failure seen).
    fn failed(&self, why: &str) {
        let mut status = self.status.lock().expect("health lock");
        let server = status.server.clone().unwrap_or_else(|| "?".into());
        status.ready = false;
        status.reason = Some(format!("JetStream does not answer properly through {server}: {why}"));
    }

    /// Avoids the server connected to now, if there is another to go to;
    /// returns its address.
    fn give_up_current(&self) -> Option<ServerAddr> {
        let mut picker = self.picker.lock().expect("health lock");
        if picker.pool < 2 {
            return None;
        }
        let last = picker.last.clone()?;
        picker.avoided.push((last.clone(), Instant::now()));
        self.status.lock().expect("health lock").moves += 1;
        Some(last)
    }
}

struct Picker {
    turn: usize,
    /// The server picked last: the one connected to, once connected.
    last: Option<ServerAddr>,
    avoided: Vec<(ServerAddr, Instant)>,
    /// How many servers the client knows (configured and discovered).
    pool: usize,
}

/// The same server, however its URL was written (configured or discovered).
fn same(a: &ServerAddr, b: &ServerAddr) -> bool {
    a.host() == b.host() && a.port() == b.port()
}

/// Probes JetStream through `client` for as long as the client lives, and
/// moves to another server when this one fails.
pub(super) fn watch(client: async_nats::Client, health: Arc<Health>, incarnation: Arc<Current>, streams: [String; 2]) {
    let streams = Arc::new(streams);
    tokio::spawn(async move {
        let mut probes = tokio::task::JoinSet::new();
        // A new connection gets a full grace period.
        let mut last_good = Instant::now();
        let mut last_failure = String::from("no answer yet");
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if client.connection_state() != async_nats::connection::State::Connected {
                        // The client reconnects by itself; nothing to judge meanwhile.
                        last_good = Instant::now();
                        continue;
                    }
                    health.connected(client.server_info().server_name);
                    probes.spawn(probe(client.clone(), streams.clone()));
                }
                Some(done) = probes.join_next() => match done {
                    Ok(Ok(created)) => {
                        last_good = Instant::now();
                        health.answered();
                        if let Some(created) = created {
                            incarnation.saw(created);
                        }
                    }
                    Ok(Err(why)) => last_failure = why,
                    Err(_) => {}
                },
            }
            if last_good.elapsed() < NOT_READY_AFTER {
                continue;
            }
            health.failed(&last_failure);
            if last_good.elapsed() < GIVE_UP_AFTER {
                continue;
            }
            // With a single server there is nowhere to go: stay, not ready,
            // and keep asking.
            let Some(from) = health.give_up_current() else { continue };
            tracing::warn!(
                server = %format_args!("{}:{}", from.host(), from.port()),
                reason = health.status().reason.as_deref().unwrap_or_default(),
                "giving up this NATS server; moving to another"
            );
            if client.force_reconnect().await.is_err() {
                // The client is gone: the adapter is shutting down.
                return;
            }
            last_good = Instant::now();
        }
    });
}

/// One look at each stream: `Ok` when its leader answers and hears a
/// quorum of its replicas, or when JetStream answers that it does not exist
/// (a definite answer; `/readyz` reports the missing stream itself). With
/// the first stream's creation time, which tells its incarnation.
async fn probe(client: async_nats::Client, streams: Arc<[String; 2]>) -> Result<Option<OffsetDateTime>, String> {
    let mut created = None;
    for stream in streams.iter() {
        let subject = format!("$JS.API.STREAM.INFO.{stream}");
        let reply = tokio::time::timeout(PROBE_TIMEOUT, client.request(subject, "".into()))
            .await
            .map_err(|_| format!("no answer about {stream} within {PROBE_TIMEOUT:?}"))?
            .map_err(|err| format!("asking about {stream}: {err}"))?;
        let info: StreamInfo = serde_json::from_slice(&reply.payload)
            .map_err(|err| format!("an answer about {stream} that does not parse: {err}"))?;
        info.judge(stream)?;
        if *stream == streams[0] {
            created = info.created.as_deref().and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok());
        }
    }
    Ok(created)
}

/// The parts of a `STREAM.INFO` answer the probe looks at.
#[derive(Deserialize)]
struct StreamInfo {
    error: Option<ApiError>,
    /// When the stream was created (RFC 3339).
    created: Option<String>,
    config: Option<StreamConfig>,
    cluster: Option<Cluster>,
}

#[derive(Deserialize)]
struct ApiError {
    err_code: Option<u64>,
    description: Option<String>,
}

#[derive(Deserialize)]
struct StreamConfig {
    num_replicas: Option<usize>,
}

#[derive(Deserialize)]
struct Cluster {
    leader: Option<String>,
    #[serde(default)]
    replicas: Vec<Peer>,
}

#[derive(Deserialize)]
struct Peer {
    current: bool,
    #[serde(default)]
    offline: bool,
    /// Nanoseconds since the leader last heard from it.
    #[serde(default)]
    active: u64,
}

/// JetStream's "stream not found".
const STREAM_NOT_FOUND: u64 = 10059;

impl StreamInfo {
    fn judge(&self, stream: &str) -> Result<(), String> {
        if let Some(error) = &self.error {
            return match error.err_code {
                Some(STREAM_NOT_FOUND) => Ok(()),
                _ => Err(format!("{stream}: {}", error.description.as_deref().unwrap_or("an error"))),
            };
        }
        let replicas = self.config.as_ref().and_then(|config| config.num_replicas).unwrap_or(1);
        let Some(cluster) = &self.cluster else { return Ok(()) };
        if replicas <= 1 {
            return Ok(());
        }
        if cluster.leader.is_none() {
            return Err(format!("{stream} has no leader"));
        }
        let heard = cluster
            .replicas
            .iter()
            .filter(|peer| peer.current && !peer.offline && Duration::from_nanos(peer.active) < SILENT_REPLICA)
            .count();
        // The leader counts itself.
        if heard + 1 < replicas / 2 + 1 {
            return Err(format!("{stream}'s leader hears {heard} of its {} other replicas", replicas - 1));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16, failed_attempts: usize) -> Server {
        let addr: ServerAddr = format!("nats://127.0.0.1:{port}").parse().expect("an address");
        Server { addr, failed_attempts, did_connect: true, is_discovered: false, last_error: None }
    }

    fn picked(health: &Health, servers: &[Server]) -> u16 {
        health.pick(servers).expect("a server").addr.port()
    }

    /// Gives up the server on `port`, as the probe task does with the one
    /// connected to.
    fn give_up(health: &Health, servers: &[Server], port: u16) {
        let _ = health.pick(servers);
        health.picker.lock().unwrap().last = Some(server(port, 0).addr);
        health.give_up_current().expect("somewhere to go");
    }

    #[test]
    fn a_given_up_server_is_left_while_another_works() {
        let health = Health::new();
        let servers = [server(1, 0), server(2, 0), server(3, 0)];
        let first = picked(&health, &servers);
        health.give_up_current().expect("three servers: somewhere to go");
        for _ in 0..6 {
            assert_ne!(picked(&health, &servers), first, "the given-up server is avoided");
        }
    }

    #[test]
    fn a_dead_server_is_not_tried_over_and_over_when_given_up_ones_remain() {
        let health = Health::new();
        let servers = [server(1, 0), server(2, 0), server(3, 0)];
        // Servers 1 and 2 were given up (say, during an election); 3 died.
        for port in [1, 2] {
            give_up(&health, &servers, port);
        }
        let dead = |failed| [server(1, 0), server(2, 0), server(3, failed)];
        assert_eq!(picked(&health, &dead(0)), 3, "the one not given up first");
        assert_eq!(picked(&health, &dead(1)), 3, "once more after one failure");
        let turns: std::collections::HashSet<u16> = (0..6).map(|_| picked(&health, &dead(5))).collect();
        assert_eq!(turns, [1, 2, 3].into(), "then all take turns");
    }

    #[test]
    fn a_node_that_was_out_of_reach_gets_its_turn_again() {
        let health = Health::new();
        // On the minority side: 1 connects but was given up; 2 and 3 failed
        // to connect while the partition lasted, and then it healed.
        let servers = [server(1, 0), server(2, 7), server(3, 9)];
        give_up(&health, &servers, 1);
        let turns: std::collections::HashSet<u16> = (0..6).map(|_| picked(&health, &servers)).collect();
        assert_eq!(turns, [1, 2, 3].into());
    }

    #[test]
    fn with_one_server_there_is_nothing_to_give_up() {
        let health = Health::new();
        let _ = health.pick(&[server(1, 0)]);
        assert!(health.give_up_current().is_none());
    }

    fn judged(json: &str) -> Result<(), String> {
        serde_json::from_str::<StreamInfo>(json).expect("parses").judge("S")
    }

    #[test]
    fn a_leader_that_hears_a_quorum_is_healthy() {
        let json = r#"{"config":{"num_replicas":3},"cluster":{"leader":"n1","replicas":[
            {"name":"n2","current":true,"active":500000000},{"name":"n3","current":false,"active":9000000000}]}}"#;
        assert_eq!(judged(json), Ok(()));
    }

    #[test]
    fn a_leader_that_hears_no_replica_has_lost_quorum() {
        let json = r#"{"config":{"num_replicas":3},"cluster":{"leader":"n1","replicas":[
            {"name":"n2","current":true,"active":4000000000},{"name":"n3","current":false,"active":900000000}]}}"#;
        assert!(judged(json).unwrap_err().contains("hears 0 of its 2"));
    }

    #[test]
    fn no_leader_and_cluster_errors_are_unhealthy_but_a_missing_stream_is_an_answer() {
        assert!(judged(r#"{"config":{"num_replicas":3},"cluster":{"replicas":[]}}"#).is_err());
        let unavailable =
            r#"{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#;
        assert!(judged(unavailable).unwrap_err().contains("temporarily unavailable"));
        assert_eq!(judged(r#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#), Ok(()));
        assert_eq!(judged(r#"{"config":{"num_replicas":1},"cluster":{"leader":"n1"}}"#), Ok(()));
    }
}
