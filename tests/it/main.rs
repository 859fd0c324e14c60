//! The integration tests, one binary with a module per area (one binary
//! links the crate and the test kit once): each runs real nats-server
//! processes on free loopback ports and adapters against them. Filter by
//! area with the module path, e.g. `cargo nextest run -p clawbus --test it
//! partitions::`.

mod api;
mod cli;
mod clock;
mod cluster;
mod command;
mod console;
mod disk;
mod doctor;
mod embedded;
mod exposure;
mod faults;
mod hosts;
mod import;
mod integrity;
mod observability;
mod openclaw;
mod partitions;
mod privilege;
mod replies;
mod safety;
mod scale;
mod skill;
mod validation;
mod wake;
