//! Test kit for clawbus: real `nats-server` processes (single node or a
//! cluster), real `clawbus` adapter processes, a stand-in OpenClaw gateway
//! that follows the hook contract and records every call, the real OpenClaw
//! gateway with a stand-in model, an API client, and wait helpers that poll
//! with a deadline instead of sleeping.
//!
//! Everything listens on 127.0.0.1, keeps its files in temporary
//! directories, and is stopped when dropped.

pub mod adapter;
pub mod api;
pub mod browser;
pub mod checker;
pub mod clock;
mod config;
mod doctor;
pub mod gateway;
mod logs;
pub mod model;
pub mod nats;
pub mod netns;
pub mod openclaw;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

pub use adapter::{Adapter, Resources};
pub use api::Api;
pub use config::{AdapterConfig, AgentSpec};
pub use doctor::{doctor, report_line};
pub use gateway::{Call, Gateway, Reply};
pub use model::{Answer, Model, Prompt, Prompts};
pub use nats::{NatsCluster, NatsServer};
pub use netns::{Host, Lab};
pub use openclaw::OpenClaw;

/// An HTTP client. (The workspace builds reqwest without a built-in TLS
/// provider, as clawbus installs ring at start; so does this.)
pub fn http_client(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).tcp_nodelay(true).build().expect("http client")
}

/// User plus system CPU time of a process (`/proc/<pid>/stat`) or thread
/// (`/proc/self/task/<tid>/stat`), Linux; to the kernel's clock tick (10 ms
/// at the usual 100 per second), so a measurement should span seconds.
pub fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The name in parentheses may hold spaces; the fields follow it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / hz))
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port").local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it yields `Some`, or panics after
/// `timeout` naming `what`. Generous timeouts cost nothing when things work
/// and keep a busy machine from failing a correct test.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks the pid; no memory involved.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// SIGKILL for process `pid` (say, a child of an adapter).
pub fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// Sends `signal` to process `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid of a child we spawned; no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A path to a program: `$VAR` if set, else `name` in a `target` directory
/// next to the running executable, else `name` on `PATH`.
pub fn program(var: &str, name: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| name.into())
}

/// Runs the `clawbus` command with `args` and waits for it.
pub fn clawbus(args: &[&str]) -> std::process::Output {
    std::process::Command::new(program("CLAWBUS_BIN", "clawbus"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run clawbus (build it first, or set CLAWBUS_BIN)")
}

/// The common case: one NATS node, one gateway, one adapter (host `hostA`)
/// hosting `agents`, all woken through that gateway.
pub struct OneHost {
    pub adapter: Adapter,
    pub gateway: Gateway,
    pub nats: NatsServer,
}

impl OneHost {
    /// With the adapter in-process.
    pub async fn start(agents: &[&str]) -> OneHost {
        OneHost::start_with(agents, |config, _| config).await
    }

    /// Like [`OneHost::start`], with a chance to adjust the config (and to
    /// add agents of other kinds, given the gateway).
    pub async fn start_with(agents: &[&str], adjust: impl FnOnce(AdapterConfig, &Gateway) -> AdapterConfig) -> OneHost {
        let (nats, gateway, config) = OneHost::parts(agents).await;
        let adapter = Adapter::start_in_process(adjust(config, &gateway)).await;
        OneHost { adapter, gateway, nats }
    }

    /// Like [`OneHost::start_with`], with the adapter as a real process, for
    /// tests that kill, stop or restart it.
    pub async fn spawn_with(agents: &[&str], adjust: impl FnOnce(AdapterConfig, &Gateway) -> AdapterConfig) -> OneHost {
        let (nats, gateway, config) = OneHost::parts(agents).await;
        let adapter = Adapter::start(adjust(config, &gateway)).await;
        OneHost { adapter, gateway, nats }
    }

    async fn parts(agents: &[&str]) -> (NatsServer, Gateway, AdapterConfig) {
        let nats = NatsServer::start();
        let gateway = Gateway::start("hook-secret").await;
        let config = agents
            .iter()
            .fold(AdapterConfig::new("hostA", nats.url()), |config, name| config.agent(AgentSpec::new(name, &gateway)));
        (nats, gateway, config)
    }

    pub fn api(&self) -> Api {
        self.adapter.api()
    }
}
