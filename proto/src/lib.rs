//! ringcast's sans-IO layers: bytes in, decisions out, no socket, no clock, no `unsafe`.
//!
//! From the bottom up: `names` and `dest` (what may be addressed), `ws` (the HTTP upgrade,
//! frames, messages), `stomp` (frames and one session), `config` and `auth` (what a server is
//! told and the keys it checks tokens with), `context` (both, shared by every connection),
//! `endpoint` (one connection: upgrade, routing, WebSocket messages, STOMP inside), plus the
//! admin API's HTTP parser and what nodes exchange through Redis (`cluster::wire`). The server
//! crate drives them from io_uring shards; tests and fuzzers drive them from memory.

#![forbid(unsafe_code)]
#![deny(unreachable_pub)]
#![deny(missing_docs)]

pub mod access;
pub mod auth;
pub mod config;
pub mod context;
pub mod dest;
pub mod endpoint;
pub mod handover;
pub mod history;
pub mod http;
pub mod kafka;
pub mod names;
pub mod outbound;
pub mod publish;
pub mod sockjs;
pub mod stomp;
pub mod ws;

/// The admin API's wire format.
pub mod admin {
    pub mod http;
}

/// What cluster nodes exchange through Redis.
pub mod cluster {
    pub mod wire;
}
