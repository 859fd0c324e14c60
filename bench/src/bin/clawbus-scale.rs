//! `clawbus-scale`: a fleet of two adapters hosting 1,000 and then 10,000
//! agents each (or the counts given): start-up time, memory, wake latency,
//! a broadcast's time and writes, server consumers, and the cost of listing
//! the fleet. Prints a table and writes JSON; BENCHMARKS.md has the results.

use std::path::PathBuf;

use clap::Parser;
use clawbus_bench::scale;

#[derive(Parser)]
#[command(about = "Start-up time, memory, wake latency and broadcast cost of adapters hosting many agents")]
struct Cli {
    /// Agents per adapter to measure (two adapters each time).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    agents: Vec<usize>,
    /// Messages sent one at a time to random agents, per count.
    #[arg(long, default_value_t = 200)]
    messages: usize,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/scale.json")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut steps = Vec::new();
    for &agents in &cli.agents {
        eprintln!("measuring {agents} agents");
        steps.push(scale::measure(agents, cli.messages).await);
    }
    print!("{}", scale::table(&steps));
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&steps)?)?;
    eprintln!("wrote {}", cli.out.display());
    Ok(())
}
