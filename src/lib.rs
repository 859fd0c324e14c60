//! clawbus: the agents' HTTP message bus on NATS JetStream, with immediate
//! wake-ups through the OpenClaw gateway.
//!
//! - [`config`]: the config file and environment.
//! - [`bus`]: JetStream (messages, state bucket, batched reads, safe writes).
//! - [`registry`]: which agents exist, where, and whether they are online.
//! - [`readstate`]: per-agent read marks.
//! - [`mailbox`]: send, inbox, ack, history: the API's operations.
//! - [`wake`]: waking local agents when their mail arrives.
//! - [`http`]: the HTTP API.
//! - [`app`]: start-up and shutdown of one adapter.

pub mod app;
pub mod bus;
pub mod config;
pub mod http;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod names;
pub mod readstate;
pub mod registry;
pub mod wake;
