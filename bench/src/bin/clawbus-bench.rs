//! `clawbus-bench`: send-to-wake latency and throughput of clawbus next to
//! raw JetStream, as a table on stdout and JSON on disk. Normally run
//! through `scripts/bench.sh`, which builds it in release mode and plots
//! the JSON; BENCHMARKS.md has the results and how to read them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clawbus_bench::{self as bench, Settings, SyncInterval};

#[derive(Parser)]
#[command(about = "Send-to-wake latency and throughput of clawbus, side by side with raw JetStream")]
struct Cli {
    /// A short run (1 s per rate, short search) to check that everything works.
    #[arg(long)]
    quick: bool,
    /// Offered rates in messages per second.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    rates: Vec<f64>,
    /// Seconds measured per rate [default: 10, quick: 1].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up before measuring [default: 1, quick: 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds of the closed-loop throughput run [default: 5, quick: 1]; 0 skips it.
    #[arg(long)]
    saturate: Option<f64>,
    /// Sends in flight in the throughput run.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds per probe of the highest-rate search [default: 3, quick: 1]; 0 skips it.
    #[arg(long)]
    probe: Option<f64>,
    /// The p99 a sustained rate must stay under, in milliseconds.
    #[arg(long, default_value_t = 50)]
    p99_limit_ms: u64,
    /// Agents, spread evenly over the adapters.
    #[arg(long, default_value_t = 20)]
    agents: usize,
    /// Adapters ("hosts"); every message goes to an agent on another one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..))]
    adapters: u16,
    /// Also measure with JetStream's default sync_interval, to show fsync's cost.
    #[arg(long)]
    default_sync: bool,
    /// Where the JSON goes (scripts/bench.sh puts the plot beside it).
    #[arg(long, default_value = "target/bench/results.json")]
    out: PathBuf,
}

impl Cli {
    fn settings(&self) -> Settings {
        let standard = Settings::standard();
        // A duration flag: as given, else the quick or standard default; 0 means none.
        let pick = |flag: Option<f64>, quick: f64, standard: Option<Duration>| {
            let secs =
                flag.or(self.quick.then_some(quick)).unwrap_or_else(|| standard.map_or(0.0, |d| d.as_secs_f64()));
            (secs > 0.0).then(|| Duration::from_secs_f64(secs))
        };
        let mut sync_intervals = vec![SyncInterval::Always];
        if self.default_sync {
            sync_intervals.push(SyncInterval::Default);
        }
        Settings {
            adapters: self.adapters.into(),
            agents: self.agents,
            rates: self.rates.clone(),
            step: pick(self.duration, 1.0, Some(standard.step)).unwrap_or(standard.step),
            warmup: pick(self.warmup, 0.5, Some(standard.warmup)).unwrap_or_default(),
            saturate: pick(self.saturate, 1.0, standard.saturate),
            concurrency: self.concurrency,
            probe: pick(self.probe, 1.0, standard.probe),
            p99_limit: Duration::from_millis(self.p99_limit_ms),
            sync_intervals,
            ..standard
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match bench::run(&cli.settings()).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("clawbus-bench: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!("{report}");
    let json = serde_json::to_string_pretty(&report).expect("report serializes");
    if let Err(err) =
        cli.out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&cli.out, json))
    {
        eprintln!("clawbus-bench: cannot write {}: {err}", cli.out.display());
        return ExitCode::FAILURE;
    }
    println!("JSON: {}", cli.out.display());
    ExitCode::SUCCESS
}
