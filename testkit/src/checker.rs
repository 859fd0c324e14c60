//! A checker in the manner of Jepsen: steady traffic through several
//! adapters while faults come and go, a history of every request and its
//! outcome, and the bus's promises checked against that history once the
//! faults have healed.
//!
//! Each send carries a token of its own in its content, so a stored message
//! is tied to the request that made it by content, never by arrival order
//! or time. A request is never retried: one that got no answer is
//! *indeterminate*, counted, and looked up afterwards (stored or not), so a
//! retry cannot turn into a duplicate that the checker would then excuse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::gateway::Gateway;

/// Longest wait for one send's answer: past the adapter's send and settle
/// timeouts (5 s + 30 s by default), so that "no answer" means the adapter
/// was unreachable or stalled, not merely slow to settle.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(45);

/// One stream of sends: `from` to `to` through the adapter behind `api`.
#[derive(Clone)]
pub struct Sender {
    /// Names this sender in reports (say, the adapter's host).
    pub label: String,
    pub api: Api,
    pub from: String,
    pub to: String,
}

/// How one request ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// 200: stored as this id.
    Stored(u64),
    /// An error status: nothing may be stored.
    Refused { status: u16, code: String, retry_after: Option<String> },
    /// No answer (cut, reset, timed out), or 504 "outcome unknown".
    Indeterminate(String),
}

/// One request and its outcome.
#[derive(Clone, Debug)]
pub struct Op {
    pub sender: usize,
    pub token: String,
    pub started: Instant,
    pub ended: Instant,
    pub outcome: Outcome,
}

/// Sends at a steady rate from every sender until stopped.
pub struct Traffic {
    senders: Vec<Sender>,
    stop: CancellationToken,
    tasks: JoinSet<Vec<Op>>,
}

impl Traffic {
    /// Starts `per_second` sends a second from each sender. Each request
    /// runs on its own, so a hung one does not slow the rate.
    pub fn start(senders: Vec<Sender>, per_second: u32) -> Traffic {
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let interval = Duration::from_secs(1) / per_second.max(1);
        for (index, sender) in senders.iter().cloned().enumerate() {
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut requests = JoinSet::new();
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    n += 1;
                    let token = format!("{}-{n}-{}", sender.label, fastrand_token());
                    requests.spawn(send_once(index, sender.clone(), token));
                }
                requests.join_all().await
            });
        }
        Traffic { senders, stop, tasks }
    }

    /// Stops sending and waits for every request's outcome.
    pub async fn stop(self) -> History {
        self.stop.cancel();
        let mut ops: Vec<Op> = self.tasks.join_all().await.into_iter().flatten().collect();
        ops.sort_by_key(|op| op.started);
        History { senders: self.senders, ops }
    }
}

/// A token unique to one request.
fn fastrand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}{:x}{:x}", std::process::id(), nanos, NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn send_once(sender: usize, to: Sender, token: String) -> Op {
    let started = Instant::now();
    let body = json!({"from": to.from, "to": to.to, "content": format!("checked send {token}")});
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, to.api.try_post("/api/send", &body)).await;
    let outcome = match answer {
        Err(_) => Outcome::Indeterminate(format!("no answer within {ANSWER_TIMEOUT:?}")),
        Ok(Err(err)) => Outcome::Indeterminate(format!("no answer: {err}")),
        Ok(Ok(answer)) if answer.status == 200 => match answer.body["id"].as_u64() {
            Some(id) => Outcome::Stored(id),
            None => Outcome::Indeterminate(format!("200 without an id: {}", answer.body)),
        },
        Ok(Ok(answer)) if answer.status == 504 => Outcome::Indeterminate(format!("504: {}", answer.body)),
        Ok(Ok(answer)) => Outcome::Refused {
            status: answer.status,
            code: answer.body["code"].as_str().unwrap_or_default().to_owned(),
            retry_after: answer.retry_after,
        },
    };
    Op { sender, token, started, ended: Instant::now(), outcome }
}

/// Acknowledges part of an agent's unread inbox, again and again, and
/// watches that nothing acknowledged comes back unread.
pub struct Acker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Acks>,
}

/// What an [`Acker`] did and saw.
#[derive(Debug, Default)]
pub struct Acks {
    pub agent: String,
    /// Ids whose acknowledgement was answered 200 (and not `ignored`).
    pub acked: HashSet<u64>,
    /// Ids the adapter answered were in no inbox, though a read had just
    /// listed them: each is a wrongly ignored acknowledgement.
    pub ignored: Vec<u64>,
    /// Ids shown unread by a read that started after their ack was answered.
    pub came_back: Vec<u64>,
}

impl Acker {
    /// Every `every`, reads `agent`'s unread inbox through `api` and
    /// acknowledges its older half by id.
    pub fn start(api: Api, agent: &str, every: Duration) -> Acker {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let agent = agent.to_owned();
        let task = tokio::spawn(async move {
            let mut acks = Acks { agent: agent.clone(), ..Acks::default() };
            while !stopped.is_cancelled() {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
                // Only acks answered before this read began are certain.
                let certain = acks.acked.clone();
                let Ok(Ok(page)) =
                    tokio::time::timeout(ANSWER_TIMEOUT, api.try_get(&format!("/api/inbox?agent={agent}&limit=1000")))
                        .await
                else {
                    continue;
                };
                if page.status != 200 {
                    continue;
                }
                let ids = Api::ids(&page.body);
                acks.came_back.extend(ids.iter().filter(|id| certain.contains(id)));
                let older: Vec<u64> = ids.iter().take(ids.len().div_ceil(2)).copied().collect();
                if older.is_empty() {
                    continue;
                }
                let body = json!({"agent": agent, "ids": older});
                if let Ok(Ok(answer)) = tokio::time::timeout(ANSWER_TIMEOUT, api.try_post("/api/ack", &body)).await
                    && answer.status == 200
                {
                    // An id the adapter found in no inbox is not acknowledged;
                    // the check after healing finds out whether it was right.
                    let ignored: HashSet<u64> =
                        answer.body["ignored"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                    acks.ignored.extend(older.iter().filter(|id| ignored.contains(id)));
                    acks.acked.extend(older.into_iter().filter(|id| !ignored.contains(id)));
                }
            }
            acks
        });
        Acker { stop, task }
    }

    pub async fn stop(self) -> Acks {
        self.stop.cancel();
        self.task.await.expect("acker task")
    }
}

/// Everything the traffic did.
pub struct History {
    pub senders: Vec<Sender>,
    pub ops: Vec<Op>,
}

impl History {
    /// How long after `since` the sender first had a send that started
    /// then and was answered 200 (`None`: never).
    pub fn served_again(&self, sender: usize, since: Instant) -> Option<Duration> {
        self.ops
            .iter()
            .filter(|op| op.sender == sender && op.started >= since && matches!(op.outcome, Outcome::Stored(_)))
            .map(|op| op.ended.duration_since(since))
            .min()
    }

    /// The longest stretch, within `window`, in which no send of the sender
    /// that started was answered 200: how long it could not serve.
    pub fn longest_outage(&self, sender: usize, window: (Instant, Instant)) -> Duration {
        let mut served: Vec<Instant> = self
            .ops
            .iter()
            .filter(|op| op.sender == sender && matches!(op.outcome, Outcome::Stored(_)))
            .map(|op| op.started)
            .filter(|at| *at >= window.0 && *at <= window.1)
            .collect();
        served.push(window.0);
        served.push(window.1);
        served.sort();
        served.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or_default()
    }

    /// Prints one row of the fault campaign's table (`scripts/chaos.sh`)
    /// for a fault from `at` to `healed`, and appends it to the file that
    /// `CLAWBUS_CHAOS_TABLE` names, if set.
    pub fn table_row(&self, fault: &str, report: &Report, at: Instant, healed: Instant) {
        let seconds = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let row = format!(
            "| {fault} | {} | {} | {} ({} stored) | {} | {} | {} | {} | {} |",
            report.ok,
            report.refused,
            report.indeterminate,
            report.indeterminate_stored,
            report.lost.len(),
            report.duplicated.len(),
            report.unwoken.len(),
            seconds(self.served_again(0, at)),
            seconds(self.served_again(0, healed)),
        );
        eprintln!("{row}");
        if let Ok(path) = std::env::var("CLAWBUS_CHAOS_TABLE") {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("chaos table");
            writeln!(file, "{row}").expect("write chaos table");
        }
    }

    /// Checks the bus's promises against what is stored now, read through
    /// `api` (any adapter; the faults must have healed), and what the
    /// recipients' gateways recorded.
    pub async fn check(&self, api: &Api, gateways: &HashMap<String, &Gateway>, acks: &[Acks]) -> Report {
        let mut report = Report::default();
        let acked: HashSet<u64> = acks.iter().flat_map(|acks| acks.acked.iter().copied()).collect();
        report.came_back = acks.iter().flat_map(|acks| acks.came_back.iter().copied()).collect();
        report.wrongly_ignored = acks.iter().flat_map(|acks| acks.ignored.iter().copied()).collect();
        // Every message in each recipient's inbox, read or not, by token.
        let mut stored: HashMap<String, Vec<(u64, bool)>> = HashMap::new();
        let recipients: HashSet<&str> = self.senders.iter().map(|s| s.to.as_str()).collect();
        let mut newest: BTreeMap<&str, u64> = BTreeMap::new();
        for recipient in &recipients {
            for message in api.all_messages(recipient).await {
                let content = message["content"].as_str().unwrap_or_default();
                let Some(token) = content.strip_prefix("checked send ") else { continue };
                let id = message["id"].as_u64().expect("id");
                stored.entry(token.to_owned()).or_default().push((id, message["read"].as_bool().unwrap_or(true)));
                let top = newest.entry(recipient).or_default();
                *top = (*top).max(id);
            }
        }
        for op in &self.ops {
            let copies = stored.get(&op.token).map(Vec::as_slice).unwrap_or_default();
            if copies.len() > 1 {
                report.duplicated.push(op.token.clone());
            }
            match &op.outcome {
                Outcome::Stored(id) => {
                    report.ok += 1;
                    match copies {
                        [] => report.lost.push(op.token.clone()),
                        [(stored_id, read), ..] => {
                            if stored_id != id {
                                report.wrong_id.push((op.token.clone(), *id, *stored_id));
                            }
                            if *read && !acked.contains(id) {
                                report.hidden.push(*id);
                            }
                            if !*read && acked.contains(id) {
                                report.unread_after_ack.push(*id);
                            }
                        }
                    }
                }
                Outcome::Refused { .. } => {
                    report.refused += 1;
                    if !copies.is_empty() {
                        report.stored_refused.push(op.token.clone());
                    }
                }
                Outcome::Indeterminate(_) => {
                    report.indeterminate += 1;
                    if !copies.is_empty() {
                        report.indeterminate_stored += 1;
                    }
                }
            }
        }
        for (recipient, top) in newest {
            let woken = gateways
                .get(recipient)
                .map(|gateway| gateway.wakes_for(recipient).iter().filter_map(|call| call.up_to).max().unwrap_or(0))
                .unwrap_or(0);
            if woken < top {
                report.unwoken.push(format!("{recipient}: newest message {top}, woken up to {woken}"));
            }
        }
        report
    }
}

/// What the checker found. Every list must be empty.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    pub refused: usize,
    pub indeterminate: usize,
    /// Indeterminate sends that turned out to be stored.
    pub indeterminate_stored: usize,
    /// Answered 200, not stored.
    pub lost: Vec<String>,
    /// Stored more than once.
    pub duplicated: Vec<String>,
    /// Answered 200 with one id, stored under another.
    pub wrong_id: Vec<(String, u64, u64)>,
    /// Answered 200, never acknowledged, but shown as read.
    pub hidden: Vec<u64>,
    /// Acknowledged (200), then shown unread by a later read while the
    /// traffic ran.
    pub came_back: Vec<u64>,
    /// Listed unread, then answered as in no inbox when acknowledged.
    pub wrongly_ignored: Vec<u64>,
    /// Acknowledged (200), and unread once everything healed.
    pub unread_after_ack: Vec<u64>,
    /// Refused with an error, stored all the same.
    pub stored_refused: Vec<String>,
    /// Recipients not woken for their newest message.
    pub unwoken: Vec<String>,
}

impl Report {
    /// Panics, with the whole report, unless every promise held.
    pub fn assert_clean(&self, what: &str) {
        let clean = self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.wrong_id.is_empty()
            && self.hidden.is_empty()
            && self.stored_refused.is_empty()
            && self.came_back.is_empty()
            && self.wrongly_ignored.is_empty()
            && self.unread_after_ack.is_empty()
            && self.unwoken.is_empty();
        assert!(clean, "{what}: the bus broke a promise: {self:#?}");
        assert!(self.ok > 0, "{what}: no send was answered 200 at all: {self:#?}");
    }
}

/// The recipients' gateways, by agent name, for [`History::check`].
pub fn by_agent<'a>(pairs: &[(&str, &'a Gateway)]) -> HashMap<String, &'a Gateway> {
    pairs.iter().map(|(name, gateway)| (name.to_string(), *gateway)).collect()
}

/// Reads `path` until it answers 200, for checks after healing.
pub async fn ready_value(api: &Api, path: &str) -> Value {
    crate::eventually(&format!("{path} to answer 200"), Duration::from_secs(60), || async {
        let answer = api.try_get(path).await.ok()?;
        (answer.status == 200).then_some(answer.body)
    })
    .await
}
