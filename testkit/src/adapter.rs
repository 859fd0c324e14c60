//! clawbus adapters with generated config files: real `clawbus serve`
//! processes (for tests that kill, stop or restart them), or the same
//! adapter started in-process on a runtime of its own.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::AdapterConfig;
use crate::netns::Forward;
use crate::{eventually, signal};

/// A running (or stopped) adapter. Restarts keep its port, so a client's
/// base URL stays valid, as it does for agents in production.
pub struct Adapter {
    config: AdapterConfig,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// Set for an in-process adapter: cancelling it stops the adapter.
    in_process: Option<CancellationToken>,
    log: Arc<Mutex<String>>,
    /// For an adapter on a lab host: the test's way in to its port.
    forward: Option<Forward>,
}

impl Adapter {
    /// Starts an adapter process and waits until it is ready (connected,
    /// provisioned).
    pub async fn start(config: AdapterConfig) -> Adapter {
        let adapter = Adapter::launch(config).await;
        adapter.wait_ready().await;
        adapter
    }

    /// Starts an adapter process and waits only until it listens.
    pub async fn launch(config: AdapterConfig) -> Adapter {
        let mut adapter = Adapter::new(config);
        adapter.spawn().await;
        adapter
    }

    /// Starts the adapter in this process, on a runtime of its own (as
    /// isolated from the test's runtime as a process would be), and waits
    /// until it is ready. It cannot be killed or restarted; its log is that
    /// of every in-process adapter.
    pub async fn start_in_process(config: AdapterConfig) -> Adapter {
        assert!(config.wrapper.is_empty(), "an in-process adapter cannot run under a wrapper; start it as a process");
        let mut adapter = Adapter::new(config);
        let config = clawbus::Config::load(Some(&adapter.write_config())).expect("a valid test config");
        let stop = CancellationToken::new();
        let (bound, port) = std::sync::mpsc::channel();
        let running = stop.clone();
        crate::logs::capture();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("adapter runtime");
            runtime.block_on(async move {
                let app = clawbus::App::bind(config).await.expect("the adapter binds");
                let _ = bound.send(app.local_addr().port());
                if let Err(err) = app.run(running).await {
                    tracing::error!("adapter failed: {err:#}");
                }
            });
        });
        adapter.port = port.recv().expect("the adapter thread reports its port");
        adapter.in_process = Some(stop);
        adapter.wait_ready().await;
        adapter
    }

    fn new(config: AdapterConfig) -> Adapter {
        let dir = TempDir::new().expect("temp dir");
        Adapter { config, dir, port: 0, child: None, in_process: None, log: Arc::default(), forward: None }
    }

    /// Writes `clawbus.toml` for the current port; returns its path.
    fn write_config(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("clawbus.toml");
        std::fs::write(&path, self.config.toml(self.port)).expect("write config");
        path
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "adapter {} is already running", self.config.host);
        assert!(self.in_process.is_none(), "an in-process adapter cannot be restarted");
        let path = self.write_config();
        let clawbus = crate::program("CLAWBUS_BIN", "clawbus");
        let mut command = match self.config.wrapper.split_first() {
            Some((outer, args)) => {
                let mut command = Command::new(outer);
                command.args(args).arg(clawbus);
                command
            }
            None => Command::new(clawbus),
        };
        let mut child = command
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
        if let (Some(host), None) = (&self.config.lab_host, &self.forward) {
            self.forward = Some(host.forward(port));
        }
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

    /// The adapter's base URL, as the test reaches it.
    pub fn base(&self) -> String {
        match &self.forward {
            Some(forward) => format!("http://{}", forward.addr()),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn host(&self) -> &str {
        &self.config.host
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: the adapter dies mid-whatever.
    pub fn kill(&mut self) {
        assert!(self.in_process.is_none(), "an in-process adapter cannot be killed; start it as a process");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the adapter stalls with its connections open, as on a
    /// stopped VM or in a swap storm.
    pub fn pause(&self) {
        signal(self.pid().expect("adapter is running"), libc::SIGSTOP);
    }

    /// SIGCONT after [`Adapter::pause`].
    pub fn resume(&self) {
        signal(self.pid().expect("adapter is running"), libc::SIGCONT);
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

    /// Waits for the process to end by itself; returns how it ended.
    pub async fn exited(&mut self) -> ExitStatus {
        let host = self.config.host.clone();
        let child = self.child.as_mut().expect("adapter is running");
        let status = eventually(&format!("adapter {host} to exit"), Duration::from_secs(60), || {
            let status = child.try_wait().expect("wait");
            async move { status }
        })
        .await;
        self.child = None;
        status
    }

    /// Starts the adapter again on the same port and waits until ready.
    pub async fn restart(&mut self) {
        self.spawn().await;
        self.wait_ready().await;
    }

    /// Everything the adapter has logged, across restarts (in-process: what
    /// every adapter of this process logged).
    pub fn log(&self) -> String {
        match self.in_process {
            Some(_) => crate::logs::captured(),
            None => self.log.lock().expect("log lock").clone(),
        }
    }

    /// CPU time and memory of the process, from /proc (Linux).
    pub fn resources(&self) -> Option<Resources> {
        let pid = self.pid()?;
        let cpu = crate::cpu_time(&format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |field: &str| -> Option<u64> {
            status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Resources { cpu, rss: kib("VmRSS:")? * 1024, peak_rss: kib("VmHWM:")? * 1024 })
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
        if let Some(stop) = self.in_process.take() {
            stop.cancel();
        }
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of adapter {} ---\n{}", self.config.host, self.log());
        }
    }
}
