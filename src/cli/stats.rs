//! `ringcast stats`: the server's counters as JSON.

use std::path::Path;

use crate::admin;

pub fn run(socket: &Path) -> Result<serde_json::Value, String> {
    super::json_body(admin::request(socket, "GET", "/stats", None)?)
}
