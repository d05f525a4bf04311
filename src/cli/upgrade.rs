//! `ringcast upgrade`: asks the running server to start a new binary and hand it every
//! connection (issue #31). Exits non-zero with the reason when the new process could not take
//! over; the old one then keeps serving.

use std::path::Path;

use crate::admin;

pub fn run(
    socket: &Path,
    binary: Option<&Path>,
    timeout: &str,
) -> Result<serde_json::Value, String> {
    let secs = super::token::parse_ttl(timeout)?;
    let mut body = serde_json::json!({ "timeout_ms": secs * 1000 });
    if let Some(b) = binary {
        // The server resolves it from its own working directory: send it absolute.
        let b = std::path::absolute(b).map_err(|e| format!("{}: {e}", b.display()))?;
        body["binary"] = serde_json::json!(b);
    }
    super::json_body(admin::request(
        socket,
        "POST",
        "/upgrade",
        Some(body.to_string().as_bytes()),
    )?)
}

/// One line for a person: who serves now, and what moved.
pub fn describe(v: &serde_json::Value) -> String {
    format!(
        "upgraded: pid {} serves {} connection(s) ({} closed) after {} ms",
        v["pid"], v["connections"], v["closed"], v["ms"]
    )
}
