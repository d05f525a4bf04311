//! `[compression]`: permessage-deflate, compressed once per broadcast.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[compression]`: permessage-deflate (RFC 7692), without context takeover either way, so a
/// broadcast is compressed once for every subscriber that negotiated it.
pub struct Compression {
    /// Accept clients' permessage-deflate offers.
    pub enabled: bool,
    /// Messages shorter than this go uncompressed (compressing them gains nothing).
    pub min_bytes: usize,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: false,
            min_bytes: 256,
        }
    }
}
