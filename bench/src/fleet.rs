//! The clawbus side: adapters (real `clawbus serve` processes) hosting the
//! agents, one stand-in OpenClaw gateway per adapter, sends through the
//! HTTP API of the sender's own adapter to an agent on another adapter,
//! and wakes matched to messages through `Clawbus-Up-To`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway};

use super::receiver::Receiver;
use super::target::{Arrivals, Attempt, Side, Target};

/// What every message says: the size of a typical agent note.
pub const CONTENT: &str = "Deploy finished on staging, please run the smoke tests and report back.";

pub struct Fleet {
    adapters: Vec<Adapter>,
    gateways: Vec<Gateway>,
    /// `/api/send` of each adapter.
    send_urls: Vec<String>,
    http: reqwest::Client,
    /// Agent `i` lives on adapter `i % adapters.len()`.
    agents: Vec<String>,
}

impl Fleet {
    /// Starts `adapters` adapters on `nats_url`, spreading `agents` agents
    /// over them, each adapter's agents woken through one gateway.
    pub async fn start(nats_url: &str, adapters: usize, agents: usize, receiver: &Receiver) -> Fleet {
        assert!(adapters >= 2 && agents >= adapters, "cross-host sends need 2+ adapters with agents");
        let names: Vec<String> = (0..agents).map(|i| format!("agent-{i:02}")).collect();
        let mut gateways = Vec::new();
        let mut started = Vec::new();
        for host in 0..adapters {
            let gateway = receiver.run(Gateway::start("bench-hook-token")).await;
            let config = names
                .iter()
                .skip(host)
                .step_by(adapters)
                .fold(AdapterConfig::new(&format!("host-{}", host + 1), nats_url), |config, name| {
                    config.agent(AgentSpec::new(name, &gateway))
                });
            started.push(Adapter::start(config).await);
            gateways.push(gateway);
        }
        let send_urls = started.iter().map(|adapter| format!("{}/api/send", adapter.base())).collect();
        let http = clawbus_testkit::http_client(Duration::from_secs(30));
        Fleet { adapters: started, gateways, send_urls, http, agents: names }
    }

    pub fn adapters(&self) -> &[Adapter] {
        &self.adapters
    }

    /// A random agent and a random agent on another adapter.
    fn pick(&self) -> (usize, usize) {
        let hosts = self.adapters.len();
        let from = fastrand::usize(..self.agents.len());
        let host = (from % hosts + 1 + fastrand::usize(..hosts - 1)) % hosts;
        let there = (self.agents.len() - host).div_ceil(hosts);
        (from, host + hosts * fastrand::usize(..there))
    }
}

impl Target for Fleet {
    const SIDE: Side = Side::Clawbus;

    async fn send(&self) -> Attempt {
        let (from, to) = self.pick();
        let url = &self.send_urls[from % self.adapters.len()];
        send_message(&self.http, url, (&self.agents[from], &self.agents[to]), to).await
    }

    fn arrivals(&self, since: Instant, stored: &[(usize, u64)]) -> Arrivals {
        let mut wakes: HashMap<String, Vec<(u64, Instant)>> = HashMap::new();
        let mut deliveries = 0;
        for wake in self.gateways.iter().flat_map(Gateway::wakes) {
            deliveries += usize::from(wake.arrived >= since);
            if let (Some(agent), Some(up_to)) = (wake.agent_id, wake.up_to) {
                wakes.entry(agent).or_default().push((up_to, wake.arrived));
            }
        }
        let coverage: HashMap<String, Coverage> =
            wakes.into_iter().map(|(agent, wakes)| (agent, Coverage::new(wakes))).collect();
        let at = stored
            .iter()
            .map(|(to, id)| coverage.get(&self.agents[*to]).and_then(|wakes| wakes.first_covering(*id)))
            .collect();
        Arrivals { at, deliveries }
    }

    fn cpu(&self) -> Option<Duration> {
        self.adapters.iter().map(|adapter| adapter.resources().map(|r| r.cpu)).sum()
    }
}

/// An error and its causes: reqwest's own text rarely says what happened.
fn reasons(err: &dyn std::error::Error) -> String {
    std::iter::successors(Some(err), |err| err.source()).map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

/// One agent's wakes, to answer "when did the first wake covering message
/// N arrive?": a wake with `Clawbus-Up-To: U` covers every message to the
/// agent with an id up to U.
struct Coverage {
    /// Ascending.
    up_to: Vec<u64>,
    /// `earliest[i]`: the first arrival among the wakes from `up_to[i]` on.
    earliest: Vec<Instant>,
}

impl Coverage {
    fn new(mut wakes: Vec<(u64, Instant)>) -> Coverage {
        wakes.sort_unstable_by_key(|&(up_to, _)| up_to);
        let mut earliest: Vec<Instant> = wakes.iter().rev().map(|&(_, at)| at).collect();
        for i in 1..earliest.len() {
            earliest[i] = earliest[i].min(earliest[i - 1]);
        }
        earliest.reverse();
        Coverage { up_to: wakes.into_iter().map(|(up_to, _)| up_to).collect(), earliest }
    }

    fn first_covering(&self, id: u64) -> Option<Instant> {
        self.earliest.get(self.up_to.partition_point(|&up_to| up_to < id)).copied()
    }
}

/// Makes every send's `Idempotency-Key` unique, as a careful agent's is.
static SENDS: AtomicU64 = AtomicU64::new(0);

/// One `POST /api/send` from one agent to another, as an agent makes it:
/// straight through reqwest rather than [`clawbus_testkit::Api`], to keep
/// the reason a send got no answer. `to` is the recipient as the target
/// counts it.
pub(crate) async fn send_message(
    http: &reqwest::Client,
    url: &str,
    (from, recipient): (&str, &str),
    to: usize,
) -> Attempt {
    let key = format!("bench-{}", SENDS.fetch_add(1, Ordering::Relaxed));
    let request = http
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .body(json!({"from": from, "to": recipient, "content": CONTENT}).to_string());
    let started = Instant::now();
    let outcome = stored_id(request).await;
    Attempt { to, scheduled: None, started, answered: Instant::now(), outcome }
}

/// Sends a `POST /api/send`; the stored message's id, or why not.
pub(crate) async fn stored_id(request: reqwest::RequestBuilder) -> Result<u64, String> {
    let response = request.send().await.map_err(|err| reasons(&err))?;
    let status = response.status();
    match response.json::<Value>().await {
        Ok(body) if status.is_success() => body["id"].as_u64().ok_or_else(|| format!("{status} {body}")),
        Ok(body) => Err(format!("{status} {body}")),
        Err(err) => Err(format!("{status}, unreadable answer: {}", reasons(&err))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_covered_by_the_first_wake_reaching_its_id() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // A retry can arrive after a later wake covering more.
        let coverage = Coverage::new(vec![(5, at(10)), (9, at(30)), (7, at(40)), (12, at(20))]);
        assert_eq!(coverage.first_covering(1), Some(at(10)));
        assert_eq!(coverage.first_covering(5), Some(at(10)));
        assert_eq!(coverage.first_covering(6), Some(at(20)));
        assert_eq!(coverage.first_covering(8), Some(at(20)));
        assert_eq!(coverage.first_covering(12), Some(at(20)));
        assert_eq!(coverage.first_covering(13), None);
    }
}
