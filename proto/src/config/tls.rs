//! `[tls]`: the certificate and key of `wss://` (and, with `api.tls`, `https://`).

use super::ConfigError;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[tls]`: the WebSocket listener speaks TLS (`wss://`) when both files are named.
pub struct Tls {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) (`--tls-key`).
    pub key: Option<PathBuf>,
    /// Hand the session keys to the kernel after the handshake where it offers kTLS.
    pub ktls: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert: None,
            key: None,
            ktls: true,
        }
    }
}

impl Tls {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(
                "tls: give both cert and key (--tls-cert and --tls-key), or neither".into(),
            );
        }
        Ok(())
    }
}
