//! STOMP 1.2 over WebSocket, sans-IO: the frame codec and the session state machine.

pub mod frame;
pub mod session;
