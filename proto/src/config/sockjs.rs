//! `[sockjs]`: the SockJS protocol's endpoints, transports and timings.

use super::ConfigError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[sockjs]`: which prefixes speak SockJS (`server.path` always does while it is enabled), and
/// the protocol's timings.
pub struct Sockjs {
    /// Off: only plain WebSocket upgrades are served.
    pub enabled: bool,
    /// STOMP endpoints besides `server.path`, e.g. Spring's `/msg-center/dfocus`.
    pub endpoints: Vec<String>,
    /// `h` frames this often on an otherwise quiet session (SockJS's default: 25 s).
    pub heartbeat_ms: u64,
    /// A session over HTTP with no request receiving for it this long is closed.
    pub disconnect_delay_ms: u64,
    /// What `/info` answers for `cookie_needed` (sticky load balancers want `JSESSIONID`).
    pub cookie_needed: bool,
    /// The `sockjs-client` script `iframe.html` loads (only the iframe-based transports of
    /// very old browsers use the page); Spring's default.
    pub client_url: String,
    /// Serve the `jsonp` and `jsonp_send` transports (off, as in Spring: JSONP answers are
    /// scripts any page may load).
    pub jsonp: bool,
    /// A streaming response (`xhr_streaming`, `eventsource`, `htmlfile`) is ended once it
    /// carried this many bytes, so the browser can free them; the client opens the next.
    pub response_limit_bytes: usize,
}

impl Default for Sockjs {
    fn default() -> Self {
        Sockjs {
            enabled: true,
            endpoints: Vec::new(),
            heartbeat_ms: 25_000,
            disconnect_delay_ms: 5_000,
            cookie_needed: false,
            client_url: "https://cdn.jsdelivr.net/npm/sockjs-client@1/dist/sockjs.min.js".into(),
            jsonp: false,
            response_limit_bytes: crate::sockjs::http::RESPONSE_LIMIT,
        }
    }
}

impl Sockjs {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for e in &self.endpoints {
            if !e.starts_with('/') || e.ends_with('/') || e.len() < 2 {
                return Err(format!(
                    "sockjs.endpoints: {e:?} must start with / and not end with one"
                )
                .into());
            }
        }
        Ok(())
    }
}
