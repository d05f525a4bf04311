//! ringcast: a WebSocket/STOMP push server on io_uring shards.
//!
//! Protocol cores (`ws`, `stomp`, `endpoint`, `admin::http`) and the shard's policy (`shard`)
//! are sans-IO; `reactor` is the only code that touches a ring, and `reactor::ring` the only
//! code with `unsafe`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod context;
pub mod dest;
pub mod endpoint;
pub mod hub;
pub mod names;
pub mod reactor;
pub mod server;
pub mod shard;
pub mod stats;
pub mod stomp;
pub mod ws;
