//! `ringcast push`: publish to a topic or a user's queue through the admin socket.

use std::io::Read;
use std::path::Path;

use serde_json::json;

use crate::admin;

pub struct PushArgs<'a> {
    pub project: &'a str,
    pub topic: Option<&'a str>,
    pub user: Option<&'a str>,
    pub queue: Option<&'a str>,
    /// The body, or `-` for standard input.
    pub body: &'a str,
}

/// Publishes and returns the admin API's answer (`sessions`, and `cluster` on a clustered node).
pub fn run(socket: &Path, a: &PushArgs<'_>) -> Result<serde_json::Value, String> {
    let body = if a.body == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading the body from stdin: {e}"))?;
        s
    } else {
        a.body.to_string()
    };
    let req = match (a.topic, a.user, a.queue) {
        (Some(t), None, None) => {
            json!({"project": a.project, "destination": format!("/topic/{t}"), "body": body})
        }
        (None, Some(u), Some(q)) => json!({
            "project": a.project, "user": u, "destination": format!("/queue/{q}"), "body": body
        }),
        _ => return Err("give either --topic NAME, or --user USER with --queue NAME".into()),
    };
    let answer = admin::request(socket, "POST", "/publish", Some(req.to_string().as_bytes()))?;
    let v = super::json_body(answer)?;
    if v["sessions"].is_u64() {
        Ok(v)
    } else {
        Err(format!("unexpected answer: {v}"))
    }
}

/// The answer as a sentence: local reach, and what became of the cross-node copy.
pub fn describe(v: &serde_json::Value) -> String {
    let n = v["sessions"].as_u64().unwrap_or(0);
    let mut s = format!("reached {n} session{}", if n == 1 { "" } else { "s" });
    if let Some(c) = v.get("cluster") {
        match (c["nodes"].as_u64(), c["error"].as_str()) {
            (Some(k), _) => s.push_str(&format!(
                " on this node; {k} other node{} with subscribers got it through Redis",
                if k == 1 { "" } else { "s" }
            )),
            (_, Some(e)) => s.push_str(&format!(" on this node; WARNING: {e}")),
            _ => {}
        }
    }
    s
}
