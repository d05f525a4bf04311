//! The system's clock, handed to the layers that take the time as a parameter (token checks in
//! `auth`): they read no clock themselves, so their tests run on one they drive by hand.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::Clock;

/// Seconds since the Unix epoch, on the system clock, as a `Clock` to hand over.
pub fn unix_s() -> Clock {
    Arc::new(now_s)
}

/// Seconds since the Unix epoch, now.
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
