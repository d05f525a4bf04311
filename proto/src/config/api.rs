//! `[api]`: the network API's listener, bounds and keys.

use super::ConfigError;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[api]`: an HTTP listener with the admin socket's routes, for backends on other hosts,
/// guarded by API keys. Off unless `listen` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Address to listen on (`--api` / `RINGCAST_API_LISTEN`); unset = no network API.
    pub listen: Option<String>,
    /// msg-center's REST routes: `POST /ws_message/topic|user`, `GET /ws_session/list`.
    pub msgcenter_compat: bool,
    /// `GET /metrics` without a key.
    pub metrics_public: bool,
    /// The web console at `/console/` (log in with a key of the `admin` scope).
    pub console: bool,
    /// Serve the API over TLS (`https://`) with the `[tls]` certificate and key.
    pub tls: bool,
    /// Connections served at once; beyond it, the oldest connection that never presented a
    /// valid key is closed to make room, or (none such) the newcomer gets 503.
    pub max_connections: usize,
    /// Connections from one address (0 = no cap); beyond it, likewise (429).
    pub max_connections_per_ip: usize,
    /// Largest request body (413 beyond it).
    pub max_body_bytes: usize,
    /// A request must arrive whole this soon after its first byte (or after the previous
    /// answer on a kept-alive connection); a silent or trickling client is then dropped.
    pub request_timeout_ms: u64,
    /// `[api.keys.NAME]`: who may call, and what.
    pub keys: BTreeMap<String, ApiKey>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: None,
            msgcenter_compat: false,
            metrics_public: false,
            console: false,
            tls: false,
            max_connections: 256,
            max_connections_per_ip: 64,
            max_body_bytes: 1 << 20,
            request_timeout_ms: 10_000,
            keys: BTreeMap::new(),
        }
    }
}

/// `[api.keys.NAME]`: one API key.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKey {
    /// The key itself (sent as `Authorization: Bearer KEY`), or
    pub key: Option<String>,
    /// a file holding it (trailing whitespace ignored).
    pub key_file: Option<PathBuf>,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Projects it may touch; empty = every project.
    pub projects: Vec<String>,
}

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `POST /publish`, msg-center's `POST /ws_message/*`.
    Publish,
    /// `/sessions`, `/disconnect`, `/stats`, msg-center's `GET /ws_session/list`.
    Admin,
    /// `GET /metrics`.
    Metrics,
}

impl Api {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(l) = &self.listen {
            super::server::check_addr("api.listen (--api)", l)?;
        }
        for (name, k) in &self.keys {
            if k.key.is_some() == k.key_file.is_some() {
                return Err(
                    format!("api.keys.{name}: give exactly one of key and key_file").into(),
                );
            }
            if k.key.as_deref().is_some_and(|v| v.len() < 16) {
                return Err(
                    format!("api.keys.{name}: a key must be at least 16 characters").into(),
                );
            }
            if k.scopes.is_empty() {
                return Err(format!(
                    "api.keys.{name}: scopes is empty: give publish, admin and/or metrics"
                )
                .into());
            }
        }
        Ok(())
    }
}
