//! One-process mode: a nats-server of the adapter's own, for a one-host
//! fleet. It listens where `nats.url` points, stores in `nats.data_dir`
//! with JetStream and an fsync on every write, within a `max_file_store`
//! below the disk's size (see [`store_limit`]), is restarted if it dies,
//! stopped with SIGTERM (JetStream flushes and exits cleanly) when the
//! adapter stops, and killed by the kernel if the adapter itself is killed,
//! so no server outlives its adapter.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::NatsConfig;

/// Longest pause before restarting a server that died.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(10);
/// Time the server gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The supervised server.
pub(crate) struct Embedded {
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
}

impl Embedded {
    /// Writes the server's config and starts it.
    pub(crate) async fn start(nats: &NatsConfig, host: &str) -> anyhow::Result<Embedded> {
        let listen = nats.embedded_listen().context("nats.url names no address to listen on")?;
        let dir = &nats.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create nats.data_dir {}", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
        let config = dir.join("nats-server.conf");
        let store = dir.join("jetstream");
        let limit = store_limit(&store, &dir);
        std::fs::write(&config, server_config(host, listen, &store, limit))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let program = nats.server_bin.clone().unwrap_or_else(|| PathBuf::from("nats-server"));
        let server = Server { program, config, log: dir.join("nats-server.log") };
        let child = server.spawn().with_context(|| {
            format!("cannot start {} (install nats-server, or set nats.server_bin)", server.program.display())
        })?;
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(server.supervise(child, stop.clone()));
        Ok(Embedded { stop, supervisor })
    }

    /// Stops the server and waits for it to exit.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.supervisor.await;
    }
}

struct Server {
    program: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Server {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.program);
        command.arg("-c").arg(&self.config).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours;
        // it runs in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn()?;
        tracing::info!(pid = child.id(), log = %self.log.display(), "embedded nats-server started");
        Ok(child)
    }

    /// Restarts the server whenever it dies, until `stop`.
    async fn supervise(self, mut child: Child, stop: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        loop {
            tokio::select! {
                exited = child.wait() => {
                    let status = exited.map_or_else(|e| e.to_string(), |s| s.to_string());
                    tracing::error!(%status, "embedded nats-server exited; restarting in {pause:?}");
                }
                _ = stop.cancelled() => {
                    terminate(&mut child).await;
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
            pause = (pause * 2).min(MAX_RESTART_PAUSE);
            match self.spawn() {
                Ok(restarted) => child = restarted,
                Err(err) => tracing::error!("embedded nats-server not restarted: {err:#}"),
            }
        }
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
        tracing::warn!("embedded nats-server did not stop in {STOP_GRACE:?}; killing it");
        let _ = child.kill().await;
    }
    tracing::info!("embedded nats-server stopped");
}

/// The server's `max_file_store`: three quarters of what its store may
/// grow into (what it holds plus the free space of `disk`, its file
/// system), measured at each start. At that limit JetStream refuses writes
/// at once (507); a disk that fills up first stalls the stream until the
/// server restarts. nats-server's own default, three quarters of the free
/// space alone, shrinks below what the store holds as it grows, and then
/// refuses every write after a restart. `None` when the disk cannot be
/// measured: the server's default applies.
fn store_limit(store: &Path, disk: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(disk.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes only into `stats`, which lives for the call.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    Some(stored_bytes(store).saturating_add(free) / 4 * 3)
}

/// Bytes of the files under `dir` (0 when it does not exist yet).
fn stored_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => stored_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |meta| meta.len()),
            Err(_) => 0,
        })
        .sum()
}

fn server_config(host: &str, listen: std::net::SocketAddr, store: &Path, limit: Option<u64>) -> String {
    let limit = limit.map(|bytes| format!("  max_file_store: {bytes}\n")).unwrap_or_default();
    format!(
        "# Written by clawbus for its embedded server; changes are overwritten.\n\
         server_name: clawbus-{host}\n\
         listen: {listen}\n\
         max_payload: 8MB\n\
         jetstream {{\n  store_dir: {store:?}\n  sync_interval: always\n{limit}}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_limit_counts_what_the_store_holds_as_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("jetstream");
        assert_eq!(stored_bytes(&store), 0, "no store yet");
        std::fs::create_dir_all(store.join("streams/CLAWBUS")).unwrap();
        std::fs::write(store.join("streams/CLAWBUS/1.blk"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(store.join("meta.inf"), b"{}").unwrap();
        assert_eq!(stored_bytes(&store), (1 << 20) + 2);
        let limit = store_limit(&store, dir.path()).expect("a measurable disk");
        assert!(limit >= (1 << 20) / 4 * 3, "{limit}");
        let config = server_config("h", "127.0.0.1:4222".parse().unwrap(), &store, Some(limit));
        assert!(config.contains(&format!("  sync_interval: always\n  max_file_store: {limit}\n}}")), "{config}");
        assert!(!server_config("h", "127.0.0.1:4222".parse().unwrap(), &store, None).contains("max_file_store"));
    }
}
