//! `ringcast stats`: the server's counters as JSON.

use std::path::Path;

use crate::admin;

pub fn run(socket: &Path, cluster: bool) -> Result<serde_json::Value, String> {
    let path = if cluster {
        "/stats?scope=cluster"
    } else {
        "/stats"
    };
    super::json_body(admin::request(socket, "GET", path, None)?)
}
