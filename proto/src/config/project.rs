//! `[projects.NAME]`: one tenant: its key, its topic policies, its history.

use super::ConfigError;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::access::{Act, Policy};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
/// `[projects.NAME]`: one tenant and the key its tokens are checked with.
pub struct Project {
    /// `HS256` (default), `RS256` or `ES256`; the algorithm is pinned per project.
    pub jwt_alg: Option<String>,
    /// The shared secret (HS256).
    pub jwt_secret: Option<String>,
    /// PEM public key file (RS256 / ES256).
    pub jwt_public_key: Option<PathBuf>,
    /// PEM private key file: lets `ringcast token` mint tokens for RS256 / ES256 projects.
    pub jwt_private_key: Option<PathBuf>,
    /// An identity provider's published key set (`https://idp/…/certs`): a token's `kid`
    /// picks the key; fetched at start, refreshed on its max-age and on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// The same set read from a file (read at start and on SIGHUP).
    pub jwks_file: Option<PathBuf>,
    /// The `iss` a token must carry.
    pub issuer: Option<String>,
    /// An `aud` a token must carry.
    pub audience: Option<String>,
    /// Clients may publish with STOMP SEND (`publish = "any"`; kept for older files).
    pub client_publish: bool,
    /// Who may subscribe to which topics: `any` (default), `none`, `claim`, `proxy`.
    pub subscribe: Policy,
    /// Who may SEND to which topics: `none` (default unless `client_publish`), `any`, `claim`,
    /// `proxy`.
    pub publish: Option<Policy>,
    /// The token claim listing the topics it grants (`claim`): exact names and `*` patterns.
    pub channels_claim: Option<String>,
    /// When set, the token must carry this claim with the project's name (a key shared by two
    /// projects then opens only the one its token names).
    pub project_claim: Option<String>,
    /// `http://…` that answers `{project, user, topic, action}` with `{"allow": bool,
    /// "reason": "…"}` (`subscribe = "proxy"`).
    pub subscribe_proxy: Option<String>,
    /// The same for SEND (`publish = "proxy"`).
    pub publish_proxy: Option<String>,
    /// `[projects.NAME.history]`: destinations that keep recent messages for recovery.
    pub history: Option<crate::history::Config>,
}

impl Project {
    /// The rule for client SEND.
    pub fn publish_policy(&self) -> Policy {
        self.publish.unwrap_or(if self.client_publish {
            Policy::Any
        } else {
            Policy::None
        })
    }

    /// Its tokens are checked against a published key set.
    pub fn uses_jwks(&self) -> bool {
        self.jwks_url.is_some() || self.jwks_file.is_some()
    }

    /// The claim naming the topics a token grants.
    pub fn channels_claim(&self) -> &str {
        self.channels_claim.as_deref().unwrap_or("channels")
    }

    /// The history `dest` keeps, if any.
    pub fn history_for(&self, dest: &crate::dest::Dest) -> Option<&crate::history::Config> {
        self.history.as_ref().filter(|h| h.covers(dest))
    }

    /// The backend to ask about `act`, if the policy is `proxy`.
    pub fn proxy_for(&self, act: Act) -> Option<&str> {
        match act {
            Act::Subscribe => self.subscribe_proxy.as_deref(),
            Act::Publish => self.publish_proxy.as_deref(),
        }
    }
}

impl Project {
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if self.jwks_url.is_some() && self.jwks_file.is_some() {
            return Err(format!("projects.{name}: give jwks_url or jwks_file, not both").into());
        }
        if let Some(u) = &self.jwks_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(
                format!("projects.{name}.jwks_url {u:?}: an http:// or https:// URL").into(),
            );
        }
        for (act, policy) in [
            (Act::Subscribe, self.subscribe),
            (Act::Publish, self.publish_policy()),
        ] {
            let url = self.proxy_for(act);
            if policy == Policy::Proxy && url.is_none() {
                return Err(format!(
                    "projects.{name}: {} = \"proxy\" needs {}_proxy = \"http://…\"",
                    act.as_str(),
                    act.as_str()
                )
                .into());
            }
            if let Some(u) = url
                && !u.starts_with("http://")
            {
                return Err(format!(
                    "projects.{name}.{}_proxy {u:?}: only http:// backends are supported (keep them on the same host or network)",
                    act.as_str()
                ).into());
            }
        }
        if let Some(h) = &self.history
            && (h.size == 0 || h.ttl_ms == 0)
        {
            return Err(
                format!("projects.{name}.history: size and ttl_ms must be at least 1").into(),
            );
        }
        Ok(())
    }
}
