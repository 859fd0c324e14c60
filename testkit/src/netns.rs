//! A real network of test hosts: each in a Linux network namespace of its
//! own, wired to a bridge, with faults applied by nftables rules.
//!
//! The lab creates everything itself and removes it when dropped: one
//! namespace per host plus one holding the bridge, veth pairs created
//! directly inside them (no interface ever appears in the machine's own
//! namespace), and addresses from 198.18.0.0/15, the benchmarking range.
//! There is no route out of the namespaces: a host reaches its peers on the
//! bridge and its own loopback, nothing else.
//!
//! The test process reaches into a namespace without being in it: a socket
//! is made by a thread that entered the namespace (`setns`), and a socket
//! stays in the namespace it was made in whichever thread uses it. That is
//! how a stand-in gateway listens on a host's own loopback, and how
//! [`Host::forward`] lets the test talk to an adapter that listens on its
//! host's loopback, as adapters do in production.
//!
//! Faults are drops, not rejections: a cut link leaves TCP connections open
//! and silent, as a pulled cable or a dead Wi-Fi does.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The lab's subnet (inside the benchmarking range 198.18.0.0/15).
const SUBNET: [u8; 3] = [198, 18, 0];
/// Host addresses start here (`.10`, `.11`, ...).
const FIRST_HOST: u8 = 10;
/// Every namespace of a lab is named `<PREFIX><pid>-...`, so that one left
/// behind by a killed test run can be recognised and removed.
const PREFIX: &str = "cbl";
/// The nftables table the lab's faults live in, in each host's namespace.
const TABLE: &str = "clawbus_lab";

/// Set to `1` where the lab must work (CI as root): a test that cannot make
/// one then fails instead of skipping.
pub const REQUIRE_VAR: &str = "CLAWBUS_REQUIRE_NETNS";

/// A network of namespaced hosts on one bridge.
pub struct Lab {
    /// `cbl<pid>-<n>`: unique on the machine while this process lives.
    name: String,
    bridge: String,
    hosts: Mutex<Vec<Host>>,
    /// Per host namespace: the addresses and TCP ports it cannot reach.
    faults: Mutex<BTreeMap<String, Blocked>>,
}

#[derive(Default, Clone)]
struct Blocked {
    peers: BTreeSet<Ipv4Addr>,
    ports: BTreeSet<u16>,
}

/// One host of a lab: a namespace with one address on the bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    ns: String,
    pub addr: Ipv4Addr,
}

impl Lab {
    /// A new, empty lab, or why one cannot be made here (not root, no
    /// `ip` or `nft`, namespaces not permitted). Tests skip on `Err` with
    /// the reason, unless [`REQUIRE_VAR`] says the lab must work.
    pub fn start() -> Result<Lab, String> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        for (tool, args) in [("ip", &["-V"][..]), ("nft", &["--version"][..])] {
            let found = Command::new(tool).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
            if !found.is_ok_and(|status| status.success()) {
                return Err(format!("`{tool}` is not installed (scripts/ensure-netns.sh installs it)"));
            }
        }
        remove_abandoned();
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let name = format!("{PREFIX}{}-{}", std::process::id(), LABS.fetch_add(1, Ordering::Relaxed));
        let bridge = format!("{name}-br");
        ip(&["netns", "add", &bridge]).map_err(|err| format!("cannot create a network namespace: {err}"))?;
        let lab = Lab { name, bridge, hosts: Mutex::default(), faults: Mutex::default() };
        ip(&["-n", &lab.bridge, "link", "add", "br0", "type", "bridge"]).map_err(|err| err.to_string())?;
        ip(&["-n", &lab.bridge, "link", "set", "br0", "up"]).map_err(|err| err.to_string())?;
        Ok(lab)
    }

    /// [`Lab::start`], or `None` after printing why the calling test is
    /// skipped. Panics instead where [`REQUIRE_VAR`] is `1`.
    pub fn start_or_skip(test: &str) -> Option<Lab> {
        match Lab::start() {
            Ok(lab) => Some(lab),
            Err(why) if std::env::var(REQUIRE_VAR).as_deref() == Ok("1") => {
                panic!("{test}: a network lab is required here ({REQUIRE_VAR}=1) but cannot be made: {why}")
            }
            Err(why) => {
                eprintln!("skipped {test}: {why}");
                None
            }
        }
    }

    /// Adds a host named `name` (for logs) with the next free address.
    pub fn host(&self, name: &str) -> Host {
        let mut hosts = self.hosts.lock().expect("lab lock");
        let index = hosts.len();
        let addr = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], FIRST_HOST + index as u8);
        let ns = format!("{}-{index}", self.name);
        let port = format!("p{index}");
        let steps: [&[&str]; 7] = [
            &["netns", "add", &ns],
            &["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &self.bridge],
            &["-n", &self.bridge, "link", "set", &port, "master", "br0", "up"],
            &["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            &["-n", &ns, "link", "set", "eth0", "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
            // Faults drop packets; a quick retransmission keeps healing fast.
            &[
                "-n",
                &ns,
                "route",
                "replace",
                &format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2]),
                "dev",
                "eth0",
                "rto_min",
                "50ms",
            ],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|err| panic!("lab host {name}: {err}"));
        }
        let host = Host { name: name.into(), ns, addr };
        hosts.push(host.clone());
        host
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn cut(&self, a: &Host, b: &Host) {
        self.change(|faults| {
            faults.entry(a.ns.clone()).or_default().peers.insert(b.addr);
            faults.entry(b.ns.clone()).or_default().peers.insert(a.addr);
        });
    }

    /// Splits the lab: a host reaches only the hosts on its own side.
    /// Hosts on no side keep reaching everyone.
    pub fn partition(&self, sides: &[&[&Host]]) {
        self.change(|faults| {
            for (i, side) in sides.iter().enumerate() {
                for other in sides.iter().skip(i + 1) {
                    for a in side.iter() {
                        for b in other.iter() {
                            faults.entry(a.ns.clone()).or_default().peers.insert(b.addr);
                            faults.entry(b.ns.clone()).or_default().peers.insert(a.addr);
                        }
                    }
                }
            }
        });
    }

    /// Drops every TCP segment to or from `port` on `host` (say, its
    /// cluster routes), while the rest of its traffic flows.
    pub fn block_port(&self, host: &Host, port: u16) {
        self.change(|faults| {
            faults.entry(host.ns.clone()).or_default().ports.insert(port);
        });
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.change(BTreeMap::clear);
    }

    /// Applies a change to the faults and rewrites every host's rules, each
    /// in one nftables transaction.
    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, Blocked>)) {
        let mut faults = self.faults.lock().expect("lab lock");
        edit(&mut faults);
        for host in self.hosts.lock().expect("lab lock").iter() {
            let blocked = faults.get(&host.ns).cloned().unwrap_or_default();
            nft(&host.ns, &ruleset(&blocked)).unwrap_or_else(|err| panic!("lab host {}: {err}", host.name));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in self.hosts.lock().expect("lab lock").iter() {
            let _ = ip(&["netns", "del", &host.ns]);
        }
        let _ = ip(&["netns", "del", &self.bridge]);
    }
}

/// The rules for one host: drop what it may not exchange.
fn ruleset(blocked: &Blocked) -> String {
    let mut rules = Vec::new();
    if !blocked.peers.is_empty() {
        let peers = join(&blocked.peers);
        rules.push((format!("ip saddr {{ {peers} }} drop"), format!("ip daddr {{ {peers} }} drop")));
    }
    if !blocked.ports.is_empty() {
        let ports = join(&blocked.ports);
        let both = format!("tcp dport {{ {ports} }} drop\n    tcp sport {{ {ports} }} drop");
        rules.push((both.clone(), both));
    }
    let (input, output): (Vec<String>, Vec<String>) = rules.into_iter().unzip();
    // Declaring the table first makes the delete valid when it is new.
    format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  \
         chain input {{\n    type filter hook input priority 0; policy accept;\n    {}\n  }}\n  \
         chain output {{\n    type filter hook output priority 0; policy accept;\n    {}\n  }}\n}}\n",
        input.join("\n    "),
        output.join("\n    ")
    )
}

fn join<T: std::fmt::Display>(items: &BTreeSet<T>) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

impl Host {
    /// The command prefix that runs a program in this host's namespace.
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.ns]
    }

    /// Runs `make` on a thread that has entered this host's namespace, so
    /// that the sockets it makes live there.
    pub fn enter<T: Send + 'static>(&self, make: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = File::open(&path)?;
            // SAFETY: setns with a namespace file descriptor that stays open
            // for the call; it changes only this thread's network namespace.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            make()
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    }

    /// A TCP connection to `addr`, made from this host.
    pub fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        self.enter(move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
    }

    /// A listener on this host's loopback (a free port).
    pub fn listen_loopback(&self) -> io::Result<TcpListener> {
        self.enter(|| TcpListener::bind("127.0.0.1:0"))
    }

    /// Makes `127.0.0.1:<port>` of this host reachable from the test
    /// process: returns a loopback address of the machine that relays each
    /// connection to it, until the returned [`Forward`] is dropped.
    pub fn forward(&self, port: u16) -> Forward {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a forward");
        let local = listener.local_addr().expect("forward addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (host, stopped) = (self.clone(), stop.clone());
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = host.connect(target) else { continue };
                relay(client, upstream);
            }
        });
        Forward { local, stop }
    }
}

/// Copies bytes both ways until either side closes.
fn relay(a: TcpStream, b: TcpStream) {
    let _ = (a.set_nodelay(true), b.set_nodelay(true));
    for (mut from, mut to) in [(a.try_clone(), b.try_clone()), (b.try_clone(), a.try_clone())]
        .into_iter()
        .filter_map(|(from, to)| Some((from.ok()?, to.ok()?)))
    {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    }
}

/// A relay from the machine's loopback into a host (see [`Host::forward`]).
pub struct Forward {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Forward {
    pub fn addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(self.local);
    }
}

/// Removes the namespaces of labs whose process is gone (a test run that
/// was killed before it could clean up).
fn remove_abandoned() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !crate::alive(pid) {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

fn ip(args: &[&str]) -> io::Result<()> {
    run(Command::new("ip").args(args), None)
}

fn nft(ns: &str, rules: &str) -> io::Result<()> {
    run(Command::new("ip").args(["netns", "exec", ns, "nft", "-f", "-"]), Some(rules))
}

fn run(command: &mut Command, input: Option<&str>) -> io::Result<()> {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    if let Some(input) = input {
        child.stdin.take().expect("piped stdin").write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let output = child.wait_with_output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{command:?}: {}", String::from_utf8_lossy(&output.stderr).trim())))
    }
}
