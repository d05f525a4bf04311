//! One connection's protocol state as plain data: what a process hands its successor with the
//! connection's socket (`ringcast upgrade`, issue #31), and what tests compare whole. Times are
//! ages, not instants (every process has its own clock); nothing refers to a shard's slab or
//! index. Export is refused, with the reason, in the states that cannot move as they are (a
//! handshake or a close under way, a question to the project's backend, a SockJS session
//! carried by HTTP requests): the caller waits or closes those with 1012.

use serde::{Deserialize, Serialize};

use crate::outbound::Wrapping;

/// An upgraded connection, as the endpoint knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// What it speaks.
    pub mode: Mode,
    /// The transport around its messages.
    pub wrapping: Wrapping,
    /// permessage-deflate's window bits (0: not negotiated).
    pub deflate: u8,
    /// A raw session that gets each message in the positions envelope.
    pub positions: bool,
    /// Bytes received that do not form a whole frame yet.
    pub pending: Vec<u8>,
    /// How much of the partial frame in `pending` is known to be valid UTF-8.
    pub peeked: u32,
    /// A fragmented message being reassembled.
    pub fragment: Option<Fragment>,
}

/// What a connection speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Raw topics, with the identity of an authenticated session.
    Raw(Option<Identity>),
    /// Every message comes back.
    Echo,
    /// STOMP.
    Stomp(Stomp),
}

/// Who an authenticated raw session is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The project its token was checked in.
    pub project: String,
    /// The user its token names.
    pub user: String,
    /// When its token expires (Unix seconds; 0 = never).
    pub exp: u32,
}

/// A STOMP session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stomp {
    /// CONNECTED already (else still owing a CONNECT).
    pub connected: bool,
    /// The negotiated version (`1.0`, `1.1`, `1.2`).
    pub version: String,
    /// Legacy `/topic/{projectId}/…` destinations accepted.
    pub legacy: bool,
    /// Its project.
    pub project: String,
    /// Its user, once CONNECTED with a token naming one.
    pub user: Option<String>,
    /// A token presented at the upgrade, used if CONNECT has none.
    pub upgrade_token: Option<String>,
    /// Its subscriptions: (id, destination as the client wrote it), in order.
    pub subs: Vec<(String, String)>,
    /// STOMP bytes received that do not form a whole frame yet.
    pub pending: Vec<u8>,
    /// Negotiated heart-beat periods in ms (what the server sends, what it expects).
    pub heartbeat: (u32, u32),
    /// Ticks since something was last received, and since something was last sent.
    pub idle: (u32, u32),
    /// When its token expires (Unix seconds; 0 = never, or no token).
    pub exp: u32,
    /// The topic patterns its token grants, for `claim` policies.
    pub grants: Option<Vec<String>>,
}

/// A fragmented WebSocket message, reassembled so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    /// A text message (else binary).
    pub text: bool,
    /// Compressed (permessage-deflate) until its last fragment.
    pub compressed: bool,
    /// The fragments' payloads so far.
    pub data: Vec<u8>,
    /// How far `data` is known to be valid UTF-8.
    pub checked: usize,
}

/// Why a connection cannot move as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotMovable {
    /// Its upgrade is not done.
    #[error("its handshake is not done")]
    Handshake,
    /// A close handshake is under way, or it is finished.
    #[error("it is closing")]
    Closing,
    /// It is a SockJS session carried by HTTP requests, or one of those requests.
    #[error("it is SockJS over HTTP")]
    Http,
    /// A SUBSCRIBE, SEND or raw topic waits for the project's backend.
    #[error("it waits for the project's backend")]
    Asking,
    /// Its shard has a send in flight on it (the driver moves it once that completes).
    #[error("a send is in flight")]
    Sending,
    /// A subscription of it is still being replayed what it missed.
    #[error("a recovery is under way")]
    Recovering,
}

/// Why a connection's state could not be taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A STOMP version this build does not speak.
    #[error("unknown STOMP version {0:?}")]
    Version(String),
}
