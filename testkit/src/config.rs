//! What goes into an adapter's `clawbus.toml`.

use std::fmt::Write as _;

use crate::gateway::Gateway;
use crate::netns::Host;

/// An agent an adapter hosts.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: String,
    pub gateway: Option<String>,
    pub hook_token: Option<String>,
    pub openclaw_agent: Option<String>,
    /// `wake`, `agent` or `none`; default: the adapter's `wake.mode`.
    pub wake: Option<String>,
    /// Extra lines for the agent's table (its own limits).
    pub extra: Vec<String>,
}

impl AgentSpec {
    /// An agent woken through `gateway` with its token.
    pub fn new(name: &str, gateway: &Gateway) -> AgentSpec {
        AgentSpec::woken_at(name, &gateway.url(), gateway.token())
    }

    /// An agent woken through the gateway at `url` with `hook_token`.
    pub fn woken_at(name: &str, url: &str, hook_token: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            gateway: Some(url.into()),
            hook_token: Some(hook_token.into()),
            openclaw_agent: None,
            wake: None,
            extra: Vec::new(),
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
            extra: Vec::new(),
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

    /// Messages the agent may send per minute.
    pub fn budget(mut self, per_minute: u32) -> AgentSpec {
        self.extra.push(format!("sends_per_minute = {per_minute}"));
        self
    }

    /// Who may send to the agent.
    pub fn accept_from(mut self, patterns: &[&str]) -> AgentSpec {
        self.extra.push(format!("accept_from = {patterns:?}"));
        self
    }
}

/// What goes into an adapter's `clawbus.toml`.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub host: String,
    pub nats_url: String,
    pub agents: Vec<AgentSpec>,
    /// Extra lines for the `[http]`, `[nats]`, `[wake]` and `[log]` tables.
    pub http: Vec<String>,
    pub nats: Vec<String>,
    pub wake: Vec<String>,
    pub log: Vec<String>,
    pub limits: Vec<String>,
    /// `threads` (absent: the default).
    pub threads: Option<usize>,
    /// A command the adapter process runs under, such as
    /// `["ip", "netns", "exec", "lab-a"]` or `["faketime", "-f", "+10m"]`.
    pub wrapper: Vec<String>,
    /// The lab host the adapter runs on (see [`AdapterConfig::on`]).
    pub lab_host: Option<Host>,
}

impl AdapterConfig {
    pub fn new(host: &str, nats_url: impl Into<String>) -> AdapterConfig {
        AdapterConfig {
            host: host.into(),
            nats_url: nats_url.into(),
            agents: Vec::new(),
            http: Vec::new(),
            nats: Vec::new(),
            log: Vec::new(),
            limits: Vec::new(),
            threads: None,
            wrapper: Vec::new(),
            lab_host: None,
            // Quick retries keep failure tests short.
            wake: vec!["max_backoff = \"2s\"".into()],
        }
    }

    pub fn agent(mut self, agent: AgentSpec) -> Self {
        self.agents.push(agent);
        self
    }

    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Runs the adapter on `host` of a network lab: in its namespace,
    /// listening on its loopback (the test reaches it through a forward).
    pub fn on(mut self, host: &Host) -> Self {
        self.lab_host = Some(host.clone());
        self.wrapped(&host.wrapper())
    }

    /// Runs the adapter process under `command` (prepended to its own).
    /// Wrappers nest: the first one added runs outermost.
    pub fn wrapped(mut self, command: &[&str]) -> Self {
        self.wrapper.extend(command.iter().map(|arg| arg.to_string()));
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

    pub fn log(mut self, line: &str) -> Self {
        self.log.push(line.into());
        self
    }

    pub fn limits(mut self, line: &str) -> Self {
        self.limits.push(line.into());
        self
    }

    /// The config file, listening on `port` (0: any free port).
    pub fn toml(&self, port: u16) -> String {
        let mut toml = format!("host = {:?}\n", self.host);
        if let Some(threads) = self.threads {
            writeln!(toml, "threads = {threads}").unwrap();
        }
        writeln!(toml, "\n[http]\nlisten = \"127.0.0.1:{port}\"").unwrap();
        self.http.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        writeln!(toml, "\n[nats]\nurl = {:?}", self.nats_url).unwrap();
        self.nats.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        toml.push_str("\n[wake]\n");
        self.wake.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        toml.push_str("\n[log]\n");
        self.log.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        toml.push_str("\n[limits]\n");
        self.limits.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        // Tests send bursts between two agents; those that test the pair
        // limit set it.
        if !self.limits.iter().any(|line| line.starts_with("pair_per_minute")) {
            toml.push_str("pair_per_minute = 0\n");
        }
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
            agent.extra.iter().for_each(|line| writeln!(toml, "{line}").unwrap());
        }
        toml
    }
}
