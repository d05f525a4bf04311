//! RFC 6455 WebSocket, sans-IO: the upgrade handshake, the frame format, and the message layer.
//! Nothing here owns a socket, a clock or a thread; the reactor feeds bytes in and sends what
//! comes out.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod message;

/// Why a connection must be closed, as the close frame will say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseError {
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'static str,
}

impl CloseError {
    /// 1000: a normal close.
    pub const NORMAL: u16 = 1000;
    /// 1001: the server is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// 1002: a protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// 1003: data of a kind not accepted.
    pub const UNSUPPORTED: u16 = 1003;
    /// 1007: a text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// 1008: a policy violation.
    pub const POLICY: u16 = 1008;
    /// 1009: a message over the limit.
    pub const TOO_BIG: u16 = 1009;
    /// 1011: an internal error.
    pub const INTERNAL: u16 = 1011;
    /// 1012: the server is restarting; the client may reconnect (a paced drain).
    pub const SERVICE_RESTART: u16 = 1012;

    /// A 1002 with `reason`.
    pub fn protocol(reason: &'static str) -> Self {
        CloseError {
            code: Self::PROTOCOL,
            reason,
        }
    }

    /// A 1007 with `reason`: data that cannot be what it claims to be.
    pub fn invalid_data(reason: &'static str) -> Self {
        CloseError {
            code: Self::INVALID_DATA,
            reason,
        }
    }

    /// A 1009.
    pub fn too_big() -> Self {
        CloseError {
            code: Self::TOO_BIG,
            reason: "message too big",
        }
    }

    /// A 1007.
    pub fn invalid_utf8() -> Self {
        CloseError {
            code: Self::INVALID_DATA,
            reason: "text is not valid UTF-8",
        }
    }
}
