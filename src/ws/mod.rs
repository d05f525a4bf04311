//! RFC 6455 WebSocket, sans-IO: the upgrade handshake, the frame format, and the message layer.
//! Nothing here owns a socket, a clock or a thread; the reactor feeds bytes in and sends what
//! comes out.

pub mod frame;
pub mod handshake;
pub mod message;

/// Why a connection must be closed, as the close frame will say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseError {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseError {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;

    pub fn protocol(reason: &'static str) -> Self {
        CloseError {
            code: Self::PROTOCOL,
            reason,
        }
    }

    pub fn too_big() -> Self {
        CloseError {
            code: Self::TOO_BIG,
            reason: "message too big",
        }
    }

    pub fn invalid_utf8() -> Self {
        CloseError {
            code: Self::INVALID_DATA,
            reason: "text is not valid UTF-8",
        }
    }
}
