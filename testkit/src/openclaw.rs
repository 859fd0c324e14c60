//! The real OpenClaw gateway (the npm package `openclaw`, at the version
//! pinned in `scripts/versions`), on a free loopback port, with its config,
//! state and logs in a temporary directory, and one agent whose model is the
//! test's stand-in ([`crate::model::Model`]).
//!
//! Node and OpenClaw are installed under `.tools/` of the repository by
//! `scripts/ensure-openclaw.sh`, once (it locks, so test processes started
//! together install once, and installs beside, then moves into place, so an
//! interrupted install leaves nothing half done). A gateway is reached
//! either way clawbus reaches agents: hooks plus the clawbus skill
//! ([`OpenClaw::hooks_and_skill`]), or the clawbus channel plugin
//! ([`OpenClaw::plugin`]), installed with `openclaw plugins install --link`
//! as the README says.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::model::Model;
use crate::{eventually, free_port, http_client};

/// Set to `1` where the gateway must run (CI): a test that cannot install
/// it then fails instead of skipping.
pub const REQUIRE_VAR: &str = "CLAWBUS_REQUIRE_OPENCLAW";
/// The gateway's own token (a gateway on loopback, in a test: any will do).
const GATEWAY_TOKEN: &str = "gateway-token";
/// The token of its hooks: another one, as OpenClaw warns when they are equal.
const HOOK_TOKEN: &str = "hook-token";
/// A cold gateway on a busy two-core machine takes tens of seconds.
const READY_WITHIN: Duration = Duration::from_secs(240);

/// The installed programs.
struct Tools {
    node: PathBuf,
    openclaw_mjs: PathBuf,
}

impl Tools {
    /// Installs what is missing, once per process; or why it cannot be.
    fn get() -> Result<&'static Tools, String> {
        static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
        TOOLS.get_or_init(Tools::install).as_ref().map_err(Clone::clone)
    }

    fn install() -> Result<Tools, String> {
        let script = repository().join("scripts/ensure-openclaw.sh");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run {}: {err}", script.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!("scripts/ensure-openclaw.sh failed ({}):\n{stderr}", output.status));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().collect::<Vec<_>>()[..] {
            [node, openclaw_mjs] => Ok(Tools { node: node.into(), openclaw_mjs: openclaw_mjs.into() }),
            _ => Err(format!("scripts/ensure-openclaw.sh printed {stdout:?}, not two paths")),
        }
    }
}

/// The repository this test kit is part of.
fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the test kit sits in the repository")
}

/// One gateway, configured, then started (and restarted) by the test.
pub struct OpenClaw {
    tools: &'static Tools,
    dir: TempDir,
    port: u16,
    agent: String,
    /// `openclaw.json`, as written last.
    config: Value,
    /// Channels off: set for a gateway reached by hooks only.
    skip_channels: bool,
    child: Option<Child>,
    /// Length of the log when the running process started.
    log_start: usize,
}

impl OpenClaw {
    /// A gateway (not started yet) with one agent, `agent`, whose model is
    /// `model`; or `None` after printing why `test` is skipped: OpenClaw
    /// cannot be installed here. Panics instead where [`REQUIRE_VAR`] is `1`.
    pub fn configure_or_skip(test: &str, model: &Model, agent: &str) -> Option<OpenClaw> {
        match Tools::get() {
            Ok(tools) => Some(OpenClaw::configure(tools, model, agent)),
            Err(why) if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") => {
                panic!("{test}: the OpenClaw gateway is required here ({REQUIRE_VAR}=1) but cannot be installed: {why}")
            }
            Err(why) => {
                eprintln!("skipped {test}: the OpenClaw gateway cannot be installed: {why}");
                None
            }
        }
    }

    /// The config for either way of reaching the agent: the stand-in model
    /// as the only provider, token auth on loopback, no calls home (update
    /// check and model catalog refresh off), the gateway's own log in the
    /// temporary directory instead of the shared `/tmp/openclaw/`.
    fn configure(tools: &'static Tools, model: &Model, agent: &str) -> OpenClaw {
        let dir = TempDir::new().expect("temp dir");
        for sub in ["home", "state", "workspace"] {
            fs::create_dir_all(dir.path().join(sub)).expect("gateway dirs");
        }
        let port = free_port();
        let config = json!({
            "gateway": {
                "mode": "local",
                "port": port,
                "bind": "loopback",
                "auth": {"mode": "token", "token": GATEWAY_TOKEN},
            },
            "models": {
                "mode": "merge",
                "catalogRefresh": {"enabled": false},
                "providers": {"standin": {
                    "baseUrl": model.url(),
                    "apiKey": "sk-local",
                    "api": "openai-completions",
                    "models": [{
                        "id": "stand-in", "name": "Stand-in model", "reasoning": false, "input": ["text"],
                        "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
                        "contextWindow": 128000, "maxTokens": 4096,
                    }],
                }},
            },
            "agents": {
                "defaults": {"model": {"primary": "standin/stand-in"}},
                "entries": {agent: {"workspace": dir.path().join("workspace")}},
            },
            "update": {"checkOnStart": false},
            "logging": {"file": dir.path().join("gateway-file.jsonl")},
        });
        let gateway =
            OpenClaw { tools, dir, port, agent: agent.into(), config, skip_channels: false, child: None, log_start: 0 };
        gateway.write_config();
        gateway
    }

    fn write_config(&self) {
        let path = self.config_path();
        fs::write(&path, serde_json::to_string_pretty(&self.config).expect("config JSON"))
            .expect("write openclaw.json");
        set_private(&path);
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("openclaw.json")
    }

    /// Where adapters send wakes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The token of its hooks.
    pub fn hook_token(&self) -> &str {
        HOOK_TOKEN
    }

    /// Hooks on for the agent (`hooks.allowedAgentIds`), channels off, and
    /// the clawbus skill in the agent's workspace (the highest-precedence
    /// skill root), with the environment it requires (without
    /// `CLAWBUS_AGENT`, OpenClaw leaves it out of `<available_skills>`)
    /// pointing it at the adapter at `adapter_url`.
    pub fn hooks_and_skill(&mut self, adapter_url: &str) {
        let skills = self.dir.path().join("workspace/skills/clawbus");
        fs::create_dir_all(&skills).expect("skills dir");
        let skill = repository().join("deploy/openclaw/skills/clawbus/SKILL.md");
        fs::copy(&skill, skills.join("SKILL.md")).expect("copy the skill");
        self.config["hooks"] =
            json!({"enabled": true, "token": HOOK_TOKEN, "path": "/hooks", "allowedAgentIds": [self.agent]});
        self.config["skills"] =
            json!({"entries": {"clawbus": {"env": {"CLAWBUS_AGENT": self.agent, "CLAWBUS_URL": adapter_url}}}});
        self.skip_channels = true;
        self.write_config();
    }

    /// The clawbus channel plugin, installed with `openclaw plugins install
    /// --link`, and `channels.clawbus` serving the agent (the clawbus agent
    /// of the same name) from the adapter at `adapter_url`.
    pub async fn plugin(&mut self, adapter_url: &str) {
        let plugin = repository().join("deploy/openclaw/plugin");
        let output = tokio::process::Command::from(self.command())
            .args(["plugins", "install", "--link", "--force", "--accept-capabilities"])
            .arg(&plugin)
            .output()
            .await
            .expect("run openclaw plugins install");
        assert!(
            output.status.success(),
            "openclaw plugins install --link failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The install records the plugin in the config; channels.clawbus is
        // known to the config only from then on.
        let installed = fs::read_to_string(self.config_path()).expect("read openclaw.json");
        self.config = serde_json::from_str(&installed).expect("openclaw.json is JSON");
        self.config["channels"] = json!({"clawbus": {"url": adapter_url, "agents": {&self.agent: &self.agent}}});
        self.write_config();
    }

    /// An `openclaw` command on this gateway's config, state and home.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.tools.node);
        let node_dir = self.tools.node.parent().expect("node's directory");
        let path = std::env::join_paths(
            std::iter::once(node_dir.to_owned())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("PATH");
        command
            .arg(&self.tools.openclaw_mjs)
            .env("HOME", self.dir.path().join("home"))
            .env("OPENCLAW_CONFIG_PATH", self.config_path())
            .env("OPENCLAW_STATE_DIR", self.dir.path().join("state"))
            // Node's compile cache beside the install, shared by every
            // gateway (else it goes to /tmp/node-compile-cache).
            .env("NODE_COMPILE_CACHE", self.tools.openclaw_mjs.with_file_name("compile-cache"))
            .env("PATH", path)
            .stdin(Stdio::null());
        if self.skip_channels {
            command.env("OPENCLAW_SKIP_CHANNELS", "1");
        }
        command
    }

    /// Starts the gateway (again: its state survives) and waits until it is
    /// ready (`/readyz` 200).
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "the gateway is already running");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("gateway log");
        self.log_start = self.log().len();
        let child = {
            use std::os::unix::process::CommandExt as _;
            self.command()
                .args(["gateway", "run"])
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                // A process group of its own, so that it can be killed whole.
                .process_group(0)
                .spawn()
                .expect("start the OpenClaw gateway")
        };
        self.child = Some(child);
        let http = http_client(Duration::from_secs(5));
        let readyz = format!("{}/readyz", self.url());
        eventually("the OpenClaw gateway to be ready", READY_WITHIN, || {
            self.check_running();
            let answer = http.get(&readyz).send();
            async move { answer.await.is_ok_and(|r| r.status().is_success()).then_some(()) }
        })
        .await;
    }

    /// Waits until the log of the running process holds `line`, such as
    /// the plugin's `following bob`.
    pub async fn wait_log(&mut self, line: &str) {
        eventually(&format!("the gateway to log {line:?}"), READY_WITHIN, || {
            self.check_running();
            let logged = self.log().get(self.log_start..).is_some_and(|log| log.contains(line));
            async move { logged.then_some(()) }
        })
        .await;
    }

    /// Panics, with the end of its log, if the gateway has exited.
    fn check_running(&mut self) {
        let child = self.child.as_mut().expect("the gateway was started");
        if let Some(status) = child.try_wait().expect("wait for the gateway") {
            panic!("the OpenClaw gateway exited ({status}):\n{}", self.log_tail());
        }
    }

    /// SIGKILL for the gateway and every process it started (some of them
    /// in sessions of their own, outside its process group): no clean
    /// shutdown, as in a crash.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let helpers = descendants(pid);
        // SAFETY: kill(2) on the group of a child we spawned; no memory involved.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
        helpers.iter().for_each(|&helper| crate::kill(helper));
        let _ = child.wait();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    /// Everything the gateway printed, across restarts.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The gateway keeps a lock file for each of its SQLite databases in
    /// `/tmp/openclaw-state-locks-<uid>/`, named
    /// `<family>.<sha256 of the database's path, 8 hex digits>.lock.sqlite`,
    /// whatever `TMPDIR` says; removes those of this gateway's databases.
    fn remove_locks(&self) {
        // SAFETY: getuid has no preconditions and touches no memory.
        let locks = PathBuf::from(format!("/tmp/openclaw-state-locks-{}", unsafe { libc::getuid() }));
        let Ok(entries) = fs::read_dir(&locks) else {
            return;
        };
        let hashes: Vec<String> =
            sqlite_files(&self.dir.path().join("state")).iter().filter_map(|db| sha256_hex(db)).collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hash = name.strip_suffix(".lock.sqlite").and_then(|stem| stem.rsplit_once('.')).map(|(_, hash)| hash);
            if hash.is_some_and(|hash| hashes.iter().any(|h| h.starts_with(hash))) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// The last lines of the log, without the console's colours.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        strip_colours(&tail)
    }
}

impl Drop for OpenClaw {
    fn drop(&mut self) {
        self.kill();
        self.remove_locks();
        if std::thread::panicking() {
            eprintln!("--- last lines of the OpenClaw gateway's log ---\n{}", self.log_tail());
        }
    }
}

/// Every descendant of process `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while let Some(&parent) = found.get(i) {
        found.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    found.split_off(1)
}

/// The SQLite databases under `dir`, by their canonical paths.
fn sqlite_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => sqlite_files(&path),
                _ if path.extension().is_some_and(|ext| ext == "sqlite") => path.canonicalize().into_iter().collect(),
                _ => Vec::new(),
            }
        })
        .collect()
}

/// The SHA-256 of a path's bytes, in hex (`sha256sum`, as the gateway's
/// lock names need nothing more).
fn sha256_hex(path: &Path) -> Option<String> {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().ok()?;
    child.stdin.take()?.write_all(path.as_os_str().as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    String::from_utf8(output.stdout).ok()?.split_whitespace().next().map(String::from)
}

fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
}
