//! `[stomp]`: heart-beats, frame bounds and the seed's legacy destinations.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
/// `[stomp]`.
pub struct Stomp {
    /// What the server offers in CONNECTED `heart-beat` (send, expect), in ms; 0 = never.
    pub heartbeat_send_ms: u32,
    /// What CONNECTED asks of the client, in ms; 0 = nothing.
    pub heartbeat_receive_ms: u32,
    /// Largest STOMP frame (headers and body).
    pub max_frame_bytes: usize,
    /// Headers per STOMP frame.
    pub max_headers: usize,
    /// Longest header line.
    pub max_header_bytes: usize,
    /// Accept the seed's forms: `/topic/{projectId}/{topic}` is `{topic}` when the segment is the
    /// session's project; `/user/queue/{projectId}` (msg-center's `convertAndSendToUser(user,
    /// "/queue/{projectId}")`) is simply the queue named after the project.
    pub legacy_destinations: bool,
}

impl Default for Stomp {
    fn default() -> Self {
        Stomp {
            heartbeat_send_ms: 10_000,
            heartbeat_receive_ms: 10_000,
            max_frame_bytes: 64 * 1024,
            max_headers: 32,
            max_header_bytes: 4096,
            legacy_destinations: false,
        }
    }
}
