//! ringcast: a WebSocket/STOMP push server on io_uring shards.
//!
//! Protocol cores (`ws`, `stomp`, `endpoint`, `admin::http`) and the shard's policy (`shard`)
//! are sans-IO; `reactor` is the only code that touches a ring, and `reactor::ring` the only
//! code with `unsafe`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

// The sans-IO layers live in `ringcast-proto`; re-exported so every path stays one crate.
pub use ringcast_proto::{
    access, auth, config, context, dest, endpoint, names, outbound, publish, sockjs, stomp, ws,
};

pub mod access_proxy;
pub mod admin;
pub mod api;
pub mod audience;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod console;
pub mod history;
pub mod hub;
pub mod ingest;
pub mod jwks;
pub mod notify;
pub mod reactor;
pub mod relay;
pub mod server;
pub mod shard;
pub mod stats;
pub mod tls;
pub mod upgrade;
