//! The `clawbus` command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clawbus::{AccountSettings, Admin, App, Config, WakeMode};
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
    /// Create the stream and the state bucket, or update them to the config,
    /// with the config's NATS user (the provisioning user), then exit.
    Setup {
        #[arg(long, env = "CLAWBUS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a nats-server `accounts` block: one least-privilege user per
    /// host config, and the provisioning user.
    NatsAuth {
        /// A host's adapter config (its host, agents, nats.user and
        /// nats.password); repeat for every host. Files only: CLAWBUS_*
        /// variables are not read.
        #[arg(long = "config", required = true)]
        configs: Vec<PathBuf>,
        /// The provisioning user, for `clawbus setup`.
        #[arg(long)]
        admin_user: String,
        /// Its password; `$NAME` is written as a reference to the server's
        /// environment variable NAME.
        #[arg(long, env = "CLAWBUS_ADMIN_PASSWORD")]
        admin_password: String,
        /// Write passwords as bcrypt hashes.
        #[arg(long)]
        bcrypt: bool,
        /// The account's JetStream file storage limit.
        #[arg(long, default_value = "30GB")]
        max_file: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => with_config(config.as_deref(), serve),
        Command::CheckConfig { config } => with_config(config.as_deref(), |config| {
            print_summary(&config);
            ExitCode::SUCCESS
        }),
        Command::Setup { config } => with_config(config.as_deref(), setup),
        Command::NatsAuth { configs, admin_user, admin_password, bcrypt, max_file } => {
            let loaded: Result<Vec<Config>, _> = configs.iter().map(|path| Config::read_file(path)).collect();
            let admin = Admin { user: admin_user, password: admin_password };
            let settings = AccountSettings { bcrypt, max_file };
            match loaded
                .map_err(anyhow::Error::from)
                .and_then(|configs| Ok(clawbus::accounts(&configs, &admin, &settings)?))
            {
                Ok(block) => {
                    print!("{block}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("clawbus: {err}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Runs `then` with the loaded config, or exits 2 naming what is wrong.
fn with_config(path: Option<&Path>, then: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(config) => then(config),
        Err(err) => {
            eprintln!("clawbus: {err}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // One TLS implementation for NATS and gateways alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

fn serve(config: Config) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = runtime().block_on(async {
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

fn setup(config: Config) -> ExitCode {
    match runtime().block_on(clawbus::setup(&config)) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("clawbus: setup failed: {err:#}");
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
