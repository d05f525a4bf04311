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

/// Publishes and returns how many sessions the message reached.
pub fn run(socket: &Path, a: &PushArgs<'_>) -> Result<u64, String> {
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
    v["sessions"]
        .as_u64()
        .ok_or_else(|| format!("unexpected answer: {v}"))
}
