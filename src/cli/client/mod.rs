//! `send`, `inbox`, `ack`, `history`, `tail`, `agents`: an operator's client
//! of an adapter's HTTP API. Tables for people, `--json` for scripts, and
//! exit codes scripts can rely on ([`Exit`]).
//!
//! The parts: `request` makes each command an HTTP request, `connection`
//! sends it and maps the answer to an exit code, `print` shows answers,
//! `follow` is `tail`'s live stream.

mod connection;
mod follow;
mod print;
mod request;

use std::path::Path;
use std::process::ExitCode;

use super::Exit;
use connection::Client;

/// Which adapter to talk to, and how.
#[derive(clap::Args)]
pub(super) struct Target {
    /// The adapter's base URL [default: http.listen of the config, else http://127.0.0.1:8091].
    #[arg(long, env = "CLAWBUS_URL", global = true)]
    url: Option<String>,
    /// An API token, when the adapter has tokens.
    #[arg(long, env = "CLAWBUS_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub(super) enum Request {
    /// Send a message (`--to '*'` broadcasts); `-` as content reads standard input.
    Send {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        content: String,
        #[arg(long, value_parser = ["normal", "high", "urgent"])]
        priority: Option<String>,
        #[arg(long)]
        reply_to: Option<u64>,
        /// Idempotency-Key: a retry with the same key stores nothing new.
        #[arg(long)]
        key: Option<String>,
    },
    /// An agent's unread messages (with `--all`, read ones too), oldest first.
    Inbox {
        agent: String,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
        #[arg(long)]
        priority: Option<String>,
    },
    /// Acknowledge messages: `--ids 4,7`, `--up-to 9` or `--all`.
    Ack {
        agent: String,
        #[arg(long, value_delimiter = ',', required_unless_present_any = ["all", "up_to"], conflicts_with_all = ["all", "up_to"])]
        ids: Vec<u64>,
        #[arg(long, conflicts_with = "up_to")]
        all: bool,
        #[arg(long)]
        up_to: Option<u64>,
    },
    /// What an agent sent and received, read or not.
    History {
        agent: String,
        /// Only the conversation with this agent.
        #[arg(long)]
        with: Option<String>,
        /// RFC 3339 or unix seconds.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// Every registered agent: host, online, unread.
    Agents,
}

/// `clawbus tail`.
#[derive(clap::Args)]
pub(super) struct Tail {
    /// Whose messages [default: the whole fleet, with the operator token].
    agent: Option<String>,
    /// Start after this id, replaying what came since.
    #[arg(long)]
    after: Option<u64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
}

/// Runs `request` against the adapter `target` (or the config) names.
pub(super) fn run(target: &Target, config: Option<&Path>, request: Request) -> ExitCode {
    with_client(target, config, |client| async move {
        let (method, path, body) = request.http();
        match client.call(method, &path, body).await {
            Ok(answer) => {
                client.print(&request, &answer);
                Exit::Ok
            }
            Err(exit) => exit,
        }
    })
}

/// Follows the live stream of `tail.agent` until interrupted.
pub(super) fn tail(target: &Target, config: Option<&Path>, tail: Tail) -> ExitCode {
    with_client(
        target,
        config,
        |client| async move { client.tail(tail.agent.as_deref(), tail.after, tail.count).await },
    )
}

fn with_client<F: Future<Output = Exit>>(
    target: &Target,
    config: Option<&Path>,
    then: impl FnOnce(Client) -> F,
) -> ExitCode {
    match Client::new(target, config) {
        Ok(client) => super::runtime().block_on(then(client)).into(),
        Err(err) => {
            eprintln!("clawbus: {}", super::chain(&err));
            Exit::Usage.into()
        }
    }
}
