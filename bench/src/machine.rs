//! What the numbers were measured on: they mean little without it.

use std::process::Command;

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub nats_server: String,
    /// The toolchain on `PATH` (normally the one that built the binaries).
    pub rustc: String,
    /// The adapter binary the benchmark started (a release build, normally).
    pub adapter_binary: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let field = |text: &str, name: &str| {
            text.lines().find(|l| l.starts_with(name))?.split_once(':').map(|(_, v)| v.trim().to_owned())
        };
        let memory_kib: f64 =
            field(&meminfo, "MemTotal").and_then(|v| v.trim_end_matches(" kB").parse().ok()).unwrap_or_default();
        Machine {
            cpus: cores(),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: format!("Linux {}", read("/proc/sys/kernel/osrelease").trim()),
            nats_server: version(clawbus_testkit::program("NATS_SERVER_BIN", "nats-server")),
            rustc: version("rustc".into()),
            adapter_binary: clawbus_testkit::program("CLAWBUS_BIN", "clawbus").display().to_string(),
        }
    }
}

/// The cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn version(program: std::path::PathBuf) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
