//! `[auth]`: whether tokens are required, the user claim, and the access proxy's bounds.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[auth]`.
pub struct Auth {
    /// Tokens are required (`--no-auth` turns this off; the embedded default has it off).
    pub enabled: bool,
    /// The claim that names the user (`sub`, or `userName` for the seed's tokens).
    pub user_claim: String,
    /// How long a project's backend (`subscribe_proxy`, `publish_proxy`) may take to answer;
    /// beyond it the request is refused.
    pub proxy_timeout_ms: u64,
    /// How long a backend's answer for one (project, user, topic, act) is reused.
    pub proxy_cache_ms: u64,
    /// Answers kept at most (the oldest go first).
    pub proxy_cache_size: usize,
    /// How long a revocation (`POST /revoke`) is kept: at least the longest token lifetime
    /// accepted, since a revoked token stays refused only as long as it is remembered.
    pub revoke_ttl_s: u64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            enabled: true,
            user_claim: "sub".into(),
            proxy_timeout_ms: 2000,
            proxy_cache_ms: 30_000,
            proxy_cache_size: 100_000,
            revoke_ttl_s: 86_400,
        }
    }
}
