//! `clawbus doctor`: one line per check, with a verdict and what to do;
//! exit 1 when any check fails. It changes nothing: permissions are probed
//! with writes the server refuses for another reason (a wrong expected
//! sequence), and gateways with a wake they reject after authentication
//! (an empty text), so no agent is woken unless `--wake` asks for it.

mod store;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use serde_json::{Value, json};

use super::chain;
use crate::bus::{self, Unreached};
use crate::config::{Config, Gateway, LocalAgent};
use crate::policy::WakeMode;

/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub(super) struct Args {
    /// nats-server's monitoring endpoint, to read its settings
    /// [default: port 8222 on the host of the first nats.url].
    #[arg(long)]
    monitor: Option<String>,
    /// Also send each agent a real wake ("clawbus doctor: test wake"), to
    /// prove its agent id is allowed. Without it, no agent is woken.
    #[arg(long)]
    wake: bool,
}

/// Ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// The lines printed so far, and whether any failed.
#[derive(Default)]
struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, verdict: Verdict, what: &str, detail: impl AsRef<str>) {
        let word = match verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        self.failed |= verdict == Verdict::Fail;
        println!("{word:<5} {what:<20} {}", detail.as_ref());
    }

    /// Says what is being checked when it may take a while.
    fn progress(&self, what: &str) {
        eprintln!("… {what}");
    }
}

pub(super) fn run(path: Option<&Path>, args: Args) -> ExitCode {
    let mut report = Report::default();
    let config = match Config::load(path) {
        Ok(config) => {
            report.line(Verdict::Ok, "config", format!("host {} with {} agents", config.host, config.agents.len()));
            for warning in config.warnings() {
                report.line(Verdict::Warn, "config", warning);
            }
            config
        }
        Err(err) => {
            report.line(Verdict::Fail, "config", format!("{err}; fix it, then run doctor again"));
            return ExitCode::FAILURE;
        }
    };
    super::runtime().block_on(async {
        nats(&config, &args, &mut report).await;
        gateways(&config, &args, &mut report).await;
    });
    if report.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

async fn nats(config: &Config, args: &Args, report: &mut Report) {
    report.progress(&format!("reaching NATS at {}", config.nats.url));
    let client = match bus::connect_within(config, CHECK_TIMEOUT).await {
        Ok(connection) => connection.client,
        Err(err @ Unreached::Setup(_)) => {
            return report.line(Verdict::Fail, "nats", format!("{}: bad credentials file?", chain(&err)));
        }
        Err(err @ Unreached::Timeout { .. }) => {
            return report.line(Verdict::Fail, "nats", format!("{err}: is nats-server running, and nats.url right?"));
        }
    };
    let info = client.server_info();
    report.line(
        Verdict::Ok,
        "nats",
        format!("connected to {} ({}, version {})", info.server_name, config.nats.url, info.version),
    );
    let js = jetstream::ContextBuilder::new().timeout(CHECK_TIMEOUT).build(client.clone());
    match js.query_account().await {
        Ok(account) => {
            report.line(Verdict::Ok, "jetstream", format!("enabled; {} streams in this account", account.streams));
            store::account(&account, report);
        }
        Err(err) => {
            report.line(
                Verdict::Fail,
                "jetstream",
                format!("not available to this user ({err}): enable JetStream, check the account"),
            );
            return;
        }
    }
    let Some(stream) = stream_check(config, &js, report).await else { return };
    clock(config, &js, report).await;
    store::stream(&stream, report);
    permissions(config, &js, report).await;
    server_settings(config, args, &stream, report).await;
}

/// The stream's settings against the config; the stream, if it exists.
async fn stream_check(config: &Config, js: &jetstream::Context, report: &mut Report) -> Option<stream::Info> {
    let nats = &config.nats;
    let bucket = format!("KV_{}_STATE", nats.stream);
    let info = match js.get_stream(&nats.stream).await {
        Ok(mut stream) => stream.info().await.ok()?.clone(),
        Err(_) => {
            report.line(
                Verdict::Fail,
                "stream",
                format!(
                    "{} does not exist: run `clawbus setup` (or start an adapter without least_privilege)",
                    nats.stream
                ),
            );
            return None;
        }
    };
    if js.get_stream(&bucket).await.is_err() {
        report.line(Verdict::Fail, "bucket", format!("{bucket} does not exist: run `clawbus setup`"));
    }
    let replicas = info.config.num_replicas;
    let peers = info.cluster.as_ref().map_or(1, |cluster| cluster.replicas.len() + 1);
    let lagging = info.cluster.as_ref().map_or(0, |c| c.replicas.iter().filter(|p| !p.current || p.offline).count());
    if replicas != nats.replicas {
        report.line(
            Verdict::Fail,
            "stream replicas",
            format!("{replicas}, but nats.replicas is {}: run `clawbus setup` with the config you want", nats.replicas),
        );
    } else if lagging > 0 {
        report.line(
            Verdict::Warn,
            "stream replicas",
            format!("{replicas}, {lagging} of them not current (a node down or catching up)"),
        );
    } else {
        report.line(Verdict::Ok, "stream replicas", format!("{replicas} on {peers} node(s), all current"));
    }
    let same = |actual: Duration, wanted: Duration| actual == wanted;
    for (what, actual, wanted, key) in [
        ("stream max_age", info.config.max_age, nats.max_age, "nats.max_age"),
        ("duplicate window", info.config.duplicate_window, nats.duplicate_window, "nats.duplicate_window"),
    ] {
        let shown = humantime::format_duration(actual);
        if same(actual, wanted) {
            report.line(Verdict::Ok, what, shown.to_string());
        } else {
            report.line(
                Verdict::Warn,
                what,
                format!(
                    "{shown}, but {key} is {}: `clawbus setup` applies the config",
                    humantime::format_duration(wanted)
                ),
            );
        }
    }
    Some(info)
}

/// This host's clock against the server's. clawbus decides by the server's
/// time, so a skew is a warning: timestamps in this host's own logs and
/// tools are off, and it usually means time synchronisation has stopped.
async fn clock(config: &Config, js: &jetstream::Context, report: &mut Report) {
    let bucket = format!("KV_{}_STATE", config.nats.stream);
    match bus::clock::read(js, &bucket).await {
        Ok((_, reading)) if reading.is_skewed() => report.line(
            Verdict::Warn,
            "clock",
            format!("{reading}: clawbus goes by the server's time, but fix this host's time synchronisation (NTP)"),
        ),
        Ok((_, reading)) => report.line(Verdict::Ok, "clock", reading.to_string()),
        Err(err) => report.line(Verdict::Warn, "clock", format!("cannot compare with the server's: {}", chain(&err))),
    }
}

/// What this host may write, probed with writes the server refuses for
/// another reason once it has allowed them: an expected last sequence no
/// subject has. A refused permission gives no answer at all.
async fn permissions(config: &Config, js: &jetstream::Context, report: &mut Report) {
    let prefix = config.subject_prefix();
    let bucket = format!("{}_STATE", config.nats.stream);
    let Some(agent) = config.agents.first().map(|a| a.name.to_string()) else {
        report.line(Verdict::Warn, "permissions", "no agents to check the rights of");
        return;
    };
    let probes = [
        (format!("{prefix}.msg.{agent}.{agent}"), format!("send as {agent}")),
        (format!("$KV.{bucket}.read.{agent}"), format!("write {agent}'s read mark")),
        (format!("$KV.{bucket}.host.{}", config.host), "write this host's heartbeat".to_owned()),
    ];
    let mut missing = Vec::new();
    for (subject, right) in probes {
        let probe = PublishMessage::build().expected_last_subject_sequence(u64::MAX);
        let allowed = match js.send_publish(subject, probe).await {
            Ok(ack) => match ack.await {
                Err(err) => err.kind() == PublishErrorKind::WrongLastSequence,
                Ok(_) => true,
            },
            Err(_) => false,
        };
        if !allowed {
            missing.push(right);
        }
    }
    if missing.is_empty() {
        report.line(Verdict::Ok, "permissions", "this host may send as its agents and write their state");
    } else {
        report.line(
            Verdict::Fail,
            "permissions",
            format!(
                "this host's NATS user may not {}: regenerate accounts with `clawbus nats-auth`",
                missing.join(", ")
            ),
        );
    }
}

/// Whether the server fsyncs every write, and how full its store is, from
/// its monitoring endpoint.
async fn server_settings(config: &Config, args: &Args, stream: &stream::Info, report: &mut Report) {
    let monitor = args.monitor.clone().unwrap_or_else(|| {
        let first = config.nats.urls().into_iter().next().unwrap_or_default();
        let host =
            first.split("://").last().unwrap_or_default().rsplit_once(':').map_or("127.0.0.1", |(h, _)| h).to_owned();
        let host = host.rsplit('@').next().unwrap_or("127.0.0.1").to_owned();
        format!("http://{host}:8222")
    });
    let varz: Option<Value> = async {
        let http = reqwest::Client::builder().timeout(CHECK_TIMEOUT).build().ok()?;
        let text = http.get(format!("{}/varz", monitor.trim_end_matches('/'))).send().await.ok()?.text().await.ok()?;
        serde_json::from_str(&text).ok()
    }
    .await;
    let Some(varz) = varz else {
        report.line(Verdict::Warn, "fsync", format!("cannot read the server's settings at {monitor}/varz (use --monitor): make sure it has `sync_interval: always`"));
        report.line(Verdict::Warn, "server store", format!("cannot read the server's usage at {monitor}/varz (use --monitor): make sure its max_file_store is below the disk's size"));
        return;
    };
    if varz["jetstream"]["config"]["sync_always"] == true {
        report.line(Verdict::Ok, "fsync", "the server fsyncs every write (sync_interval: always)");
    } else {
        let hint = if stream.config.num_replicas >= 3 {
            "; replicas soften this, a power cut of every node still loses writes"
        } else {
            ""
        };
        report.line(
            Verdict::Warn,
            "fsync",
            format!("the server acknowledges writes before they reach the disk: set `sync_interval: always`{hint}"),
        );
    }
    store::server(&varz, report);
}

async fn gateways(config: &Config, args: &Args, report: &mut Report) {
    let Ok(agents) = config.local_agents() else { return };
    let http = match reqwest::Client::builder().timeout(CHECK_TIMEOUT).build() {
        Ok(http) => http,
        Err(err) => return report.line(Verdict::Fail, "gateways", format!("cannot build an HTTP client: {err}")),
    };
    for LocalAgent { name, gateway, mode } in agents {
        let Some(gateway) = gateway else {
            let detail = match mode {
                WakeMode::Channel => "not woken (wake = \"channel\": the OpenClaw channel plugin follows it)",
                _ => "not woken (wake = \"none\")",
            };
            report.line(Verdict::Ok, &format!("agent {name}"), detail);
            continue;
        };
        report.progress(&format!("asking {}'s gateway at {}", name, gateway.url));
        let (verdict, detail) = probe(&http, &gateway, args.wake).await;
        report.line(verdict, &format!("agent {name}"), detail);
    }
}

/// Calls the gateway's wake hook so that it answers after checking the
/// token: with an empty text (rejected, 400) or, with `wake`, a real notice.
async fn probe(http: &reqwest::Client, gateway: &Gateway, wake: bool) -> (Verdict, String) {
    let url = gateway.hook("wake");
    let text = if wake { "clawbus doctor: test wake, nothing to read" } else { "" };
    let body = json!({"text": text, "mode": "now", "agentId": gateway.openclaw_agent});
    let sent = http.post(url.clone()).bearer_auth(gateway.hook_token.expose()).json_body(&body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            return (
                Verdict::Fail,
                format!("gateway not reachable at {} ({err}): is OpenClaw running with hooks.enabled?", gateway.url),
            );
        }
    };
    let status = response.status().as_u16();
    let answer = response.text().await.unwrap_or_default();
    let id = &gateway.openclaw_agent;
    match (status, wake) {
        (200..=299, true) => (Verdict::Ok, format!("woken through {} as agentId {id:?}", gateway.url)),
        (200..=299, false) => {
            (Verdict::Warn, format!("{} accepted an empty wake: it may have woken {id:?}", gateway.url))
        }
        (400, _) if answer.to_lowercase().contains("agent") => (
            Verdict::Fail,
            format!("agentId {id:?} is not allowed: add it to the gateway's hooks.allowedAgentIds ({answer})"),
        ),
        (400, false) => (
            Verdict::Ok,
            format!("{} answers and accepts the hook token (agentId {id:?} shows only on a wake: --wake)", gateway.url),
        ),
        (401 | 403, _) => (
            Verdict::Fail,
            format!("{} refused the hook token ({status}): set hook_token to the gateway's hooks.token", gateway.url),
        ),
        (404, _) => (
            Verdict::Fail,
            format!("{url} not found ({status}): set hooks.enabled and hooks.path = \"/hooks\" in OpenClaw"),
        ),
        (429, _) => (
            Verdict::Fail,
            format!(
                "{} throttles this host after failed tokens ({status}): fix hook_token, wait a minute",
                gateway.url
            ),
        ),
        _ => (
            Verdict::Fail,
            format!("{} answered {status}: {}", gateway.url, answer.chars().take(120).collect::<String>()),
        ),
    }
}

/// A JSON body without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("Content-Type", "application/json").body(body.to_string())
    }
}
