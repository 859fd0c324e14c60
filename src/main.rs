//! The `clawbus` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawbus::{App, Config, WakeMode};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "The agents' HTTP message bus on NATS JetStream, with immediate wake-ups")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the adapter: serve the HTTP API and wake this host's agents.
    Serve {
        /// Config file [default: ./clawbus.toml, which may be absent].
        #[arg(long, env = "CLAWBUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and show what this adapter would host.
    CheckConfig {
        #[arg(long, env = "CLAWBUS_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Serve { config: path } | Command::CheckConfig { config: path }) = &cli.command;
    let config = match Config::load(path.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("clawbus: {err}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::CheckConfig { .. } => {
            print_summary(&config);
            ExitCode::SUCCESS
        }
        Command::Serve { .. } => serve(config),
    }
}

fn serve(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // One TLS implementation for NATS and gateways alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        App::bind(config).await?.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    shutdown.cancel();
}

fn print_summary(config: &Config) {
    println!("host {} listens on {}, NATS {}", config.host, config.http.listen, config.nats.url);
    let agents = config.local_agents().unwrap_or_default();
    for agent in agents {
        match (&agent.gateway, agent.mode) {
            (Some(gateway), mode) if mode != WakeMode::None => {
                println!("  {} → {:?} via {} (agentId {})", agent.name, mode, gateway.url, gateway.openclaw_agent)
            }
            _ => println!("  {} (no wake-ups)", agent.name),
        }
    }
}
