//! `[server]`: the listener, shards, io_uring and the admin socket.

use super::ConfigError;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[server]`.
pub struct Server {
    /// The WebSocket listener's address (`--listen`).
    pub listen: String,
    /// The WebSocket endpoint (raw and STOMP sessions).
    pub path: String,
    /// Whether `echo_path` echoes messages back (what the Autobahn suite drives).
    pub echo: bool,
    /// Where the echo endpoint answers (with `echo` on).
    pub echo_path: String,
    /// 0 = one per core, more when `max_connections` needs more fd tables.
    pub shards: usize,
    /// Connections the whole server holds; beyond it, 503 (`--max-connections`).
    pub max_connections: usize,
    /// Unset = a per-user runtime directory (see `default_admin_socket`).
    pub admin_socket: Option<PathBuf>,
    /// Force the single-shot io_uring path (what 5.10–5.18 kernels get).
    pub io_compat: bool,
    /// Per shard: read buffers shared by all its connections (a power of two; 0 = sized from
    /// the shard count, 64–512) and their size.
    pub read_buffers: u16,
    /// Bytes per read buffer.
    pub read_buffer_size: u32,
    /// Submission queue entries per shard ring.
    pub ring_entries: u32,
    /// If non-empty, upgrades whose `Origin` is not listed get 403.
    pub allowed_origins: Vec<String>,
    /// On SIGTERM, how long sessions get to answer our close before the process exits.
    pub shutdown_grace_ms: u64,
    /// On SIGTERM, close the sessions spread evenly over this window (WebSocket 1012, STOMP
    /// `ERROR message:server restart`, each with a jittered `retry-after` hint), so that
    /// their reconnects do not all land at once; 0 = close every session at once (1001).
    pub drain_ms: u64,
    /// Unix users allowed on the admin socket besides the server's own user and root (checked
    /// with SO_PEERCRED on every connection, on top of the socket file's 0600 mode).
    pub admin_uids: Vec<u32>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "127.0.0.1:8080".into(),
            path: "/ws".into(),
            echo: false,
            echo_path: "/echo".into(),
            shards: 0,
            max_connections: 100_000,
            admin_socket: None,
            io_compat: false,
            read_buffers: 0,
            read_buffer_size: 4096,
            ring_entries: 4096,
            allowed_origins: Vec::new(),
            shutdown_grace_ms: 3000,
            drain_ms: 0,
            admin_uids: Vec::new(),
        }
    }
}

/// An `IP:PORT` to listen on; a bare port gets the address it probably meant.
pub(super) fn check_addr(what: &str, v: &str) -> Result<(), ConfigError> {
    match v.parse::<std::net::SocketAddr>() {
        Ok(_) => Ok(()),
        Err(_) if v.parse::<u16>().is_ok() => Err(format!(
            "{what} {v:?} is a port without an address: use 127.0.0.1:{v} (this host only) or 0.0.0.0:{v} (every interface)"
        ).into()),
        Err(e) => Err(format!(
            "{what} {v:?}: {e}: use IP:PORT, e.g. 127.0.0.1:8080"
        ).into()),
    }
}

impl Server {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_addr("server.listen (--listen)", &self.listen)?;
        let rb = self.read_buffers;
        if rb != 0 && (!rb.is_power_of_two() || rb > 32768) {
            return Err("server.read_buffers must be 0 (auto) or a power of two ≤ 32768".into());
        }
        if self.read_buffer_size < 512 {
            return Err("server.read_buffer_size must be at least 512".into());
        }
        if !self.path.starts_with('/') || !self.echo_path.starts_with('/') {
            return Err("server.path and server.echo_path must start with /".into());
        }
        Ok(())
    }
}
