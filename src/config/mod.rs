//! The adapter's configuration: a TOML file, then `CLAWBUS_*` environment
//! variables (`__` separates nesting levels, e.g. `CLAWBUS_NATS__URL`).
//!
//! Loading validates everything up front: a bad value stops start-up with a
//! message that names the key, rather than surfacing later as a failed wake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::Url;
use serde::Deserialize;

use crate::names::AgentName;
use crate::policy::{Limits, Policy, WakeMode};

mod secret;
mod sources;
mod validate;

pub(crate) use validate::Problem;

pub(crate) use secret::Secret;
use sources::{default_host, duration, env_provider};

/// Default path of the config file when neither `--config` nor
/// `CLAWBUS_CONFIG` names one.
pub(crate) const DEFAULT_PATH: &str = "clawbus.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{}", parse_errors(.0))]
    Parse(Box<figment::Error>),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("{} problems:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Problem>),
}

/// Every error figment found, one a line (its own display shows the first).
fn parse_errors(err: &figment::Error) -> String {
    let all: Vec<String> = err.clone().into_iter().map(|e| e.to_string()).collect();
    all.join("\n")
}

fn default_threads() -> usize {
    1
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name this adapter reports in the agent registry.
    #[serde(default = "default_host")]
    pub host: String,
    /// Threads that run the adapter. One is the cheapest per message: no
    /// thread hands work to another, which is most of the CPU of a message
    /// on a small host. More help only a host whose agents keep more than
    /// one core busy (thousands of agents, fleet listings of tens of
    /// thousands of rows).
    #[serde(default = "default_threads")]
    pub threads: usize,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub wake: WakeConfig,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: Limits,
}

/// How the adapter logs (the level follows `RUST_LOG`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_message_bytes: usize,
    /// May act as any agent and read the whole fleet.
    pub operator_token: Option<Secret>,
    /// Agent name → API token. Empty (and no operator token) means no auth.
    pub tokens: BTreeMap<String, Secret>,
    /// Without tokens the API is open to whoever reaches it: a listen
    /// address other than loopback then needs this set on purpose.
    pub allow_open: bool,
    /// Host names (besides loopback ones) that requests may be addressed to
    /// without tokens; others are refused, against DNS rebinding.
    pub hosts: Vec<String>,
    /// Names that may send without being a registered agent (scripts, CI).
    pub senders: Vec<AgentName>,
    /// Open `/api/stream` connections, in all and per agent.
    pub max_streams: usize,
    pub max_streams_per_agent: usize,
    /// Open HTTP connections; more are closed at once.
    pub max_connections: usize,
}

impl HttpConfig {
    /// No tokens: the API answers whoever reaches it.
    pub fn is_open(&self) -> bool {
        self.operator_token.is_none() && self.tokens.is_empty()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8091)),
            max_message_bytes: 256 * 1024,
            operator_token: None,
            tokens: BTreeMap::new(),
            allow_open: false,
            hosts: Vec::new(),
            senders: Vec::new(),
            max_streams: 256,
            max_streams_per_agent: 8,
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated.
    pub url: String,
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub stream: String,
    pub replicas: usize,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub duplicate_window: Duration,
    /// How long a send may wait for JetStream's acknowledgement before the
    /// adapter settles its outcome another way (see `bus::publish`).
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
    /// How much longer a send whose outcome is in doubt keeps trying to
    /// settle it before answering 504 "outcome unknown".
    #[serde(deserialize_with = "duration")]
    pub settle_timeout: Duration,
    /// Sends one adapter lets wait for JetStream at once; beyond it a send
    /// is refused (503) at once instead of queueing towards its deadline. A
    /// single node persists a few thousand messages per second with fsync,
    /// so the default is about a quarter of a second of backlog.
    pub max_sends_in_flight: usize,
    /// Messages the connection buffers per subscription, above all the
    /// replies to reads (one per message read): the client drops what does
    /// not fit, so the reads in flight are bounded to replies that fit.
    pub reply_buffer: usize,
    /// This host's NATS user has only the rights `clawbus nats-auth` grants
    /// a host: `serve` creates nothing (`clawbus setup` does), and writes
    /// only for this host's agents.
    pub least_privilege: bool,
    /// One-process mode: `serve` runs and supervises a nats-server of its
    /// own, listening where `url` points and storing in `data_dir`.
    pub embedded: bool,
    pub data_dir: PathBuf,
    /// The nats-server program [default: `nats-server` on `PATH`].
    pub server_bin: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            stream: "CLAWBUS".into(),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
            send_timeout: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(30),
            max_sends_in_flight: 1024,
            reply_buffer: 64 * 1024,
            least_privilege: false,
            embedded: false,
            data_dir: PathBuf::from("clawbus-data"),
            server_bin: None,
        }
    }
}

impl NatsConfig {
    /// Where an embedded nats-server listens: the first URL's address.
    pub fn embedded_listen(&self) -> Option<SocketAddr> {
        let first = self.urls().into_iter().next()?;
        let address = first.strip_prefix("nats://").unwrap_or(&first);
        address.parse().ok()
    }

    pub fn urls(&self) -> Vec<String> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeConfig {
    pub mode: WakeMode,
    /// Extra wait after the first pending message, to fold more into one wake.
    #[serde(deserialize_with = "duration")]
    pub coalesce: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Per-attempt deadline of a gateway call.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Defaults for agents that do not set their own: one OpenClaw gateway
    /// usually serves every agent of a host.
    pub gateway: Option<String>,
    pub hook_token: Option<Secret>,
}

impl Default for WakeConfig {
    fn default() -> Self {
        Self {
            mode: WakeMode::Wake,
            coalesce: Duration::ZERO,
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(15),
            gateway: None,
            hook_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: AgentName,
    pub gateway: Option<String>,
    pub hook_token: Option<Secret>,
    /// `agentId` sent to the gateway; default: the agent's name.
    pub openclaw_agent: Option<String>,
    pub wake: Option<WakeMode>,
    /// This agent's own conversation safety settings (see `policy`).
    pub accept_from: Option<Vec<String>>,
    pub sends_per_minute: Option<u32>,
    pub max_hops: Option<u32>,
    pub pair_per_minute: Option<u32>,
}

impl AgentConfig {
    /// The settings this agent's adapter publishes for every adapter;
    /// `default_mode` is `wake.mode`, for an agent without its own.
    pub fn policy(&self, default_mode: WakeMode) -> Policy {
        Policy {
            wake: Some(self.wake.unwrap_or(default_mode)),
            accept_from: self.accept_from.clone(),
            sends_per_minute: self.sends_per_minute,
            max_hops: self.max_hops,
            pair_per_minute: self.pair_per_minute,
        }
    }
}

/// An agent hosted by this adapter, with every default resolved.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    pub name: AgentName,
    pub mode: WakeMode,
    /// `None` unless the adapter wakes the agent ([`WakeMode::wakes`]).
    pub gateway: Option<Gateway>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub url: Url,
    pub hook_token: Secret,
    pub openclaw_agent: String,
}

impl Gateway {
    /// The URL of the hook endpoint `name` (`wake`, `agent`).
    pub fn hook(&self, name: &str) -> Url {
        let base = self.url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/hooks/{name}")).expect("a path added to a valid URL is valid")
    }
}

impl Config {
    /// Loads `path` (or the default file, which may be absent), then the
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => path.to_owned(),
            None => PathBuf::from(DEFAULT_PATH),
        };
        Self::from_figment(Figment::new().merge(Toml::file(file)).merge(env_provider()))
    }

    /// Reads a file alone, without the environment (whose values would
    /// apply to every file read by one command), and checks only types and
    /// names: secrets such as hook tokens usually come from the environment.
    pub fn read_file(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_owned()));
        }
        Figment::new().merge(Toml::file(path)).extract().map_err(|e| ConfigError::Parse(Box::new(e)))
    }

    /// Parses a TOML document (no environment).
    #[cfg(test)]
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        let mut problems = config.problems();
        match problems.len() {
            0 => Ok(config),
            1 => {
                let Problem { key, message } = problems.remove(0);
                Err(ConfigError::Invalid { key, message })
            }
            _ => Err(ConfigError::Problems(problems)),
        }
    }

    /// Subject prefix of the stream: its name in lower case, so that several
    /// buses can share one NATS account.
    pub fn subject_prefix(&self) -> String {
        self.nats.stream.to_ascii_lowercase()
    }

    /// The state bucket's name.
    pub fn bucket(&self) -> String {
        format!("{}_STATE", self.nats.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        host = "mini-pc-3"
        [http]
        listen = "127.0.0.1:9000"
        [http.tokens]
        Alice = "s3cret"
        [nats]
        url = "nats://a:4222, nats://b:4222"
        max_age = "2d"
        [wake]
        coalesce = "20ms"
        gateway = "http://127.0.0.1:18789"
        hook_token = "hook"
        [[agents]]
        name = "bob"
        openclaw_agent = "main"
        [[agents]]
        name = "carol"
        wake = "none"
    "#;

    #[test]
    fn full_example_resolves_defaults() {
        let config = Config::from_toml(FULL).unwrap();
        assert_eq!(config.nats.urls(), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.nats.max_age, Duration::from_secs(2 * 86400));
        assert_eq!(config.wake.coalesce, Duration::from_millis(20));
        assert_eq!(config.http.tokens["Alice"].expose(), "s3cret");
        let agents = config.local_agents().unwrap();
        let bob = agents[0].gateway.as_ref().unwrap();
        assert_eq!((bob.openclaw_agent.as_str(), bob.hook_token.expose()), ("main", "hook"));
        assert!(agents[1].gateway.is_none());
        assert_eq!(config.subject_prefix(), "clawbus");
    }

    fn error_of(toml: &str) -> String {
        Config::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(error_of("[nats]\nmax_age = \"soon\"").contains("nats.max_age"));
        assert!(error_of("[http]\nlisten = 5").contains("http.listen"));
        assert!(error_of("[http]\nlistn = \"x\"").contains("listn"));
        assert!(error_of("[[agents]]\nname = \"a.b\"").contains("agents"));
        assert!(error_of("[[agents]]\nname = \"bob\"").contains("agents[0].gateway"));
        let no_token = "[[agents]]\nname = \"bob\"\ngateway = \"http://h:1\"";
        assert!(error_of(no_token).contains("agents[0].hook_token"));
        let twice = "[wake]\nmode = \"none\"\n[[agents]]\nname = \"b\"\n[[agents]]\nname = \"b\"";
        assert!(error_of(twice).contains("agents[1].name"));
        assert!(error_of("[nats]\nreplicas = 7").contains("nats.replicas"));
        assert!(error_of("[http.tokens]\n\"a*\" = \"x\"").contains("http.tokens.a*"));
        let bad_token = "[[agents]]\nname = \"bob\"\ngateway = \"http://h:1\"\nhook_token = \"a\\nb\"";
        assert!(error_of(bad_token).contains("agents[0].hook_token"), "{}", error_of(bad_token));
        for threads in ["0", "65", "-1"] {
            assert!(error_of(&format!("threads = {threads}")).contains("threads"), "threads = {threads}");
        }
    }

    #[test]
    fn one_thread_unless_told_otherwise() {
        assert_eq!(Config::from_toml("").unwrap().threads, 1);
        assert_eq!(Config::from_toml("threads = 4").unwrap().threads, 4);
    }

    #[test]
    fn every_problem_is_reported_at_once_and_risks_are_warned_of() {
        let text = "[nats]\nurl = \"not a url\"\nreplicas = 9\n[http]\nlisten = \"0.0.0.0:8091\"\n\
                    [[agents]]\nname = \"bob\"";
        let err = error_of(text);
        for key in ["nats.url", "nats.replicas", "http.listen", "agents[0].gateway"] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        assert!(err.starts_with("4 problems"), "{err}");
        let risky =
            Config::from_toml("[nats]\nreplicas = 2\n[http]\nlisten = \"0.0.0.0:1\"\nallow_open = true").unwrap();
        let warnings = risky.warnings().join("\n");
        for risk in ["no [[agents]]", "reachable from the network", "replicas = 2"] {
            assert!(warnings.contains(risk), "{risk} missing from: {warnings}");
        }
        assert!(Config::from_toml("[nats]\nurl = \"nats://a:4222, b:4222\"").is_ok(), "bare host:port is fine");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns figment::Error
    fn environment_overrides_the_file_and_keeps_token_case() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[nats]\nurl = \"nats://file:4222\"")?;
            jail.set_env("CLAWBUS_NATS__URL", "nats://env:4222");
            jail.set_env("CLAWBUS_HTTP__TOKENS__Bob", "t");
            jail.set_env("CLAWBUS_CONFIG", "not configuration");
            jail.set_env("CLAWBUS_BIN", "nor this");
            jail.set_env("CLAWBUS_THREADS", "2");
            let config = Config::load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(config.nats.url, "nats://env:4222");
            assert_eq!(config.threads, 2);
            assert_eq!(config.http.tokens["Bob"].expose(), "t");
            Ok(())
        });
    }

    #[test]
    fn a_channel_agent_needs_no_gateway_and_publishes_its_mode() {
        let config = Config::from_toml("[[agents]]\nname = \"bob\"\nwake = \"channel\"").unwrap();
        let agents = config.local_agents().unwrap();
        assert_eq!((agents[0].mode, agents[0].gateway.is_none()), (WakeMode::Channel, true));
        assert_eq!(config.agents[0].policy(config.wake.mode).wake, Some(WakeMode::Channel));
        let inherited = Config::from_toml("[wake]\nmode = \"channel\"\n[[agents]]\nname = \"bob\"").unwrap();
        assert_eq!(inherited.local_agents().unwrap()[0].mode, WakeMode::Channel);
        assert!(!WakeMode::Channel.wakes() && !WakeMode::None.wakes() && WakeMode::Agent.wakes());
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        assert!(matches!(Config::load(Some(Path::new("/nonexistent.toml"))), Err(ConfigError::Missing(_))));
    }
}
