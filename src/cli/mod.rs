//! The `clawbus` command line: the adapter (`serve`), setting a bus up
//! (`setup`, `nats-auth`, `check-config`, `doctor`, `import`), and an
//! operator's client of an adapter's HTTP API (`send`, `inbox`, `ack`,
//! `history`, `tail`, `agents`).
//!
//! Exit codes scripts can rely on are in [`Exit`].

mod client;
mod doctor;
mod exit;
mod import;
mod logs;
mod setup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::accounts::{self, Admin, Settings as AccountSettings};
use crate::app::App;
use crate::config::{Config, LogFormat};
use crate::policy::WakeMode;
use clap::{Parser, Subcommand};
use exit::Exit;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "The agents' HTTP message bus on NATS JetStream, with immediate wake-ups",
    after_help = "Exit codes: 0 ok; 1 refused or failed; 2 bad arguments or config; 3 no adapter at the URL; \
                  4 unknown agent; 5 NATS unavailable, try again (doctor: 1 when any check fails)."
)]
struct Cli {
    /// Config file [default: ./clawbus.toml, which may be absent]; `nats-auth` takes one per host.
    #[arg(long = "config", env = "CLAWBUS_CONFIG", global = true)]
    configs: Vec<PathBuf>,
    #[command(flatten)]
    target: client::Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the adapter: serve the HTTP API and wake this host's agents.
    Serve {
        /// `json` for one object a line [default: log.format, else text].
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check the configuration (every problem at once, and risky settings)
    /// and show what this adapter would host.
    CheckConfig,
    /// Check a host end to end: config, NATS, permissions, the stream's
    /// settings and each agent's gateway.
    Doctor(doctor::Args),
    /// Create the stream and the state bucket, or update them to the config,
    /// with the config's NATS user (the provisioning user), then exit.
    Setup,
    /// Bring the old bus's messages along: read its SQLite database and
    /// store its messages, with their read state, once.
    Import(import::Args),
    /// Print a nats-server `accounts` block: one least-privilege user per
    /// host config (`--config` once per host; files only, CLAWBUS_*
    /// variables are not read), and the provisioning user.
    NatsAuth {
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
        /// The account's JetStream file storage limit: at most the servers'
        /// `max_file_store` (10GB in the shipped configs), or they refuse to start.
        #[arg(long, default_value = "8GB")]
        max_file: String,
    },
    #[command(flatten)]
    Client(client::Request),
    /// Follow messages as they are stored (an agent's, or the whole fleet's
    /// with the operator token), resuming where it left off after outages.
    Tail(client::Tail),
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let Cli { configs, target, command } = Cli::parse();
    // One TLS implementation for NATS, gateways and adapters alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if configs.len() > 1 && !matches!(command, Command::NatsAuth { .. }) {
        eprintln!("clawbus: --config is given {} times; only nats-auth takes several", configs.len());
        return Exit::Usage.into();
    }
    let config = configs.first().map(PathBuf::as_path);
    match command {
        Command::Serve { log_format } => with_config(config, |config| serve(config, log_format)),
        Command::CheckConfig => with_config(config, |config| {
            print_summary(&config);
            for warning in config.warnings() {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }),
        Command::Doctor(args) => doctor::run(config, args),
        Command::Setup => with_config(config, setup),
        Command::Import(args) => with_config(config, |config| import::run(config, args)),
        Command::NatsAuth { admin_user, admin_password, bcrypt, max_file } => {
            let admin = Admin { user: admin_user, password: admin_password };
            let settings = AccountSettings { bcrypt, max_file };
            nats_auth(&configs, &admin, &settings)
        }
        Command::Client(request) => client::run(&target, config, request),
        Command::Tail(tail) => client::tail(&target, config, tail),
    }
}

fn nats_auth(paths: &[PathBuf], admin: &Admin, settings: &AccountSettings) -> ExitCode {
    if paths.is_empty() {
        eprintln!("clawbus: nats-auth needs --config once per host");
        return Exit::Usage.into();
    }
    let loaded: Result<Vec<Config>, _> = paths.iter().map(|path| Config::read_file(path)).collect();
    match loaded.map_err(anyhow::Error::from).and_then(|configs| Ok(accounts::accounts(&configs, admin, settings)?)) {
        Ok(block) => {
            print!("{block}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("clawbus: {err}");
            Exit::Usage.into()
        }
    }
}

/// Runs `then` with the loaded config, or exits 2 naming what is wrong.
fn with_config(path: Option<&Path>, then: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(config) => then(config),
        Err(err) => {
            eprintln!("clawbus: {err}");
            Exit::Usage.into()
        }
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

/// The adapter's runtime: `config.threads` worker threads, where one means
/// everything runs on the calling thread.
fn serve_runtime(config: &Config) -> tokio::runtime::Runtime {
    let mut builder = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn serve(config: Config, log_format: Option<LogFormat>) -> ExitCode {
    let _flush = logs::init(log_format.unwrap_or(config.log.format));
    let result = serve_runtime(&config).block_on(async {
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
    match runtime().block_on(setup::run(&config)) {
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
            (Some(gateway), mode) if mode.wakes() => {
                println!("  {} → {:?} via {} (agentId {})", agent.name, mode, gateway.url, gateway.openclaw_agent)
            }
            (_, WakeMode::Channel) => {
                println!("  {} (no wake-ups: the OpenClaw channel plugin follows it)", agent.name)
            }
            _ => println!("  {} (no wake-ups)", agent.name),
        }
    }
}

/// An error and its causes, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
