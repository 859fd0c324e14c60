//! clawbus: the agents' HTTP message bus on NATS JetStream, with immediate
//! wake-ups through the OpenClaw gateway.
//!
//! A message travels through the modules in this order:
//!
//! - `http`: the HTTP API (validation, auth, errors) calls
//! - `mailbox`: send, inbox, ack, history, live; one file per verb; which
//!   rests on `registry` (who exists, where), `readstate` (read marks) and
//! - `bus`: JetStream (the stream, the state bucket, batched reads, safe
//!   writes, followers). The stream pushes stored messages to
//! - `wake`: the adapter hosting the recipient calls its OpenClaw gateway.
//!
//! `app` starts and stops one adapter; `config` reads its settings;
//! `accounts` writes the NATS permissions of each host. Only what the binary
//! and the tests use is public.

mod accounts;
mod app;
mod bus;
pub mod cli;
mod config;
mod embedded;
mod fleet;
mod http;
mod mailbox;
mod message;
mod metrics;
mod names;
mod policy;
mod readstate;
mod registry;
mod wake;
mod wire;

#[cfg(test)]
mod layers;

pub use app::App;
pub use config::{Config, ConfigError};
pub use policy::WakeMode;
