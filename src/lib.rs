//! ringcast: a WebSocket/STOMP push server on io_uring shards.
//!
//! Protocol cores (`ws`, `endpoint`, `admin::http`) are sans-IO; `reactor` is the only code that
//! touches a ring, and `reactor::ring` the only code with `unsafe`.

pub mod admin;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod endpoint;
pub mod hub;
pub mod names;
pub mod reactor;
pub mod server;
pub mod stats;
pub mod stomp;
pub mod ws;
