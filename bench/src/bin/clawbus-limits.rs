//! `clawbus-limits`: what conversation safety costs a send. Send latency,
//! send-to-wake latency and throughput with the limits on, next to the same
//! with them off, in one run; a table on stdout and JSON on disk.
//! BENCHMARKS.md has the results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clawbus_bench::SyncInterval;
use clawbus_bench::limits::{self, ROUNDS, Settings};

#[derive(Parser)]
#[command(about = "Send latency, send-to-wake latency and throughput with conversation-safety limits on and off")]
struct Cli {
    /// Messages per side sent one at a time, for the latencies.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Seconds per side of the throughput run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Sends in flight in the throughput run.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// JetStream's default sync_interval (fsync every 2 minutes) instead of fsync after every write.
    #[arg(long)]
    default_sync: bool,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/limits.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings {
        messages: cli.messages as usize,
        duration: Duration::from_secs_f64(cli.duration.max(0.1)),
        concurrency: cli.concurrency as usize,
        rounds: ROUNDS,
        sync_interval: if cli.default_sync { SyncInterval::Default } else { SyncInterval::Always },
    };
    let report = match limits::run(&settings).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("clawbus-limits: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{report}");
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    if let Err(err) =
        cli.out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&cli.out, json))
    {
        eprintln!("clawbus-limits: cannot write {}: {err}", cli.out.display());
        return ExitCode::FAILURE;
    }
    println!("JSON: {}", cli.out.display());
    ExitCode::SUCCESS
}
