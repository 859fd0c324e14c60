//! Real `clawbus serve` processes with generated config files.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::api::Api;
use crate::gateway::Gateway;
use crate::{eventually, signal};

/// An agent an adapter hosts.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: String,
    pub gateway: Option<String>,
    pub hook_token: Option<String>,
    pub openclaw_agent: Option<String>,
    /// `wake`, `agent` or `none`; default: the adapter's `wake.mode`.
    pub wake: Option<String>,
}

impl AgentSpec {
    /// An agent woken through `gateway` with its token.
    pub fn new(name: &str, gateway: &Gateway) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            gateway: Some(gateway.url()),
            hook_token: Some(gateway.token().into()),
            openclaw_agent: None,
            wake: None,
        }
    }

    /// An agent that is never woken.
    pub fn silent(name: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            gateway: None,
            hook_token: None,
            openclaw_agent: None,
            wake: Some("none".into()),
        }
    }

    pub fn openclaw_agent(mut self, id: &str) -> AgentSpec {
        self.openclaw_agent = Some(id.into());
        self
    }

    pub fn wake(mut self, mode: &str) -> AgentSpec {
        self.wake = Some(mode.into());
        self
    }

    pub fn hook_token(mut self, token: &str) -> AgentSpec {
        self.hook_token = Some(token.into());
        self
    }
}

/// What goes into an adapter's `clawbus.toml`.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub host: String,
    pub nats_url: String,
    pub agents: Vec<AgentSpec>,
    /// Extra lines for the `[http]`, `[nats]` and `[wake]` tables.
    pub http: Vec<String>,
    pub nats: Vec<String>,
    pub wake: Vec<String>,
}

impl AdapterConfig {
    pub fn new(host: &str, nats_url: impl Into<String>) -> AdapterConfig {
        AdapterConfig {
            host: host.into(),
            nats_url: nats_url.into(),
            agents: Vec::new(),
            http: Vec::new(),
            nats: Vec::new(),
            // Quick retries keep failure tests short.
            wake: vec!["max_backoff = \"2s\"".into()],
        }
    }

    pub fn agent(mut self, agent: AgentSpec) -> Self {
        self.agents.push(agent);
        self
    }

    pub fn http(mut self, line: &str) -> Self {
        self.http.push(line.into());
        self
    }

    pub fn nats(mut self, line: &str) -> Self {
        self.nats.push(line.into());
        self
    }

    pub fn wake(mut self, line: &str) -> Self {
        self.wake.push(line.into());
        self
    }

    fn toml(&self, port: u16) -> String {
        let mut toml = format!("host = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n", self.host);
        self.http.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        writeln!(toml, "\n[nats]\nurl = {:?}", self.nats_url).unwrap();
        self.nats.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        toml.push_str("\n[wake]\n");
        self.wake.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        for agent in &self.agents {
            writeln!(toml, "\n[[agents]]\nname = {:?}", agent.name).unwrap();
            let optional = [
                ("gateway", &agent.gateway),
                ("hook_token", &agent.hook_token),
                ("openclaw_agent", &agent.openclaw_agent),
                ("wake", &agent.wake),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    writeln!(toml, "{key} = {value:?}").unwrap();
                }
            }
        }
        toml
    }
}

/// A running (or stopped) adapter process. Restarts keep its port, so a
/// client's base URL stays valid, as it does for agents in production.
pub struct Adapter {
    config: AdapterConfig,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Adapter {
    /// Starts an adapter and waits until it is ready (connected, provisioned).
    pub async fn start(config: AdapterConfig) -> Adapter {
        let adapter = Adapter::launch(config).await;
        adapter.wait_ready().await;
        adapter
    }

    /// Starts an adapter and waits only until it listens.
    pub async fn launch(config: AdapterConfig) -> Adapter {
        let mut adapter =
            Adapter { config, dir: TempDir::new().expect("temp dir"), port: 0, child: None, log: Arc::default() };
        adapter.spawn().await;
        adapter
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "adapter {} is already running", self.config.host);
        let path = self.dir.path().join("clawbus.toml");
        std::fs::write(&path, self.config.toml(self.port)).expect("write config");
        let mut child = Command::new(crate::program("CLAWBUS_BIN", "clawbus"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", std::env::var("CLAWBUS_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start clawbus (build it first, or set CLAWBUS_BIN)");
        let stderr = child.stderr.take().expect("piped stderr");
        self.child = Some(child);
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let start = self.log.lock().expect("log lock").len();
        let log = self.log.clone();
        let host = self.config.host.clone();
        let port = eventually(&format!("adapter {host} to listen"), Duration::from_secs(30), || {
            let text = log.lock().expect("log lock")[start..].to_owned();
            async move {
                let (_, rest) = text.split_once("listening on http://127.0.0.1:")?;
                rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u16>().ok()
            }
        })
        .await;
        self.port = port;
    }

    pub async fn wait_ready(&self) {
        let api = self.api();
        let host = &self.config.host;
        eventually(&format!("adapter {host} to be ready"), Duration::from_secs(30), || async {
            api.is_ready().await.then_some(())
        })
        .await;
    }

    pub fn api(&self) -> Api {
        Api::new(self.base())
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> &str {
        &self.config.host
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the adapter dies mid-whatever.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns how the process ended and how long it took.
    pub async fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("adapter is running");
        let started = Instant::now();
        signal(child.id(), libc::SIGTERM);
        let deadline = started + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Starts the adapter again on the same port and waits until ready.
    pub async fn restart(&mut self) {
        self.spawn().await;
        self.wait_ready().await;
    }

    /// Everything the adapter has logged, across restarts.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// CPU time and memory of the process, from /proc (Linux).
    pub fn resources(&self) -> Option<Resources> {
        let pid = self.pid()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| -> Option<u64> {
            status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Resources {
            cpu: Duration::from_millis(ticks * 1000 / hz),
            rss: kib("VmRSS:")? * 1024,
            peak_rss: kib("VmHWM:")? * 1024,
        })
    }
}

/// What a process has used so far.
#[derive(Clone, Copy, Debug)]
pub struct Resources {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Resident memory now, in bytes.
    pub rss: u64,
    /// Peak resident memory, in bytes.
    pub peak_rss: u64,
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of adapter {} ---\n{}", self.config.host, self.log());
        }
    }
}
