//! The server's admin socket, as the bench uses it: counters and publishes.

use serde_json::{Value, json};

pub(crate) fn server_stats(sock: &std::path::Path) -> Result<Value, String> {
    let (status, body) = ringcast::admin::request(sock, "GET", "/stats", None)?;
    if status != 200 {
        return Err(format!("stats: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

/// Publishes `body` to `/topic/TOPIC` of `project` through a ringcast admin socket.
/// Publishes to users `bench-I` (one item per (I, body)), all in one request.
pub(crate) fn admin_publish_users(
    sock: &std::path::Path,
    project: &str,
    items: &[(usize, String)],
) -> Result<(), String> {
    let all: Vec<serde_json::Value> = items
        .iter()
        .map(|(i, body)| {
            json!({"project": project, "user": format!("bench-{i}"), "destination": "/queue/bench", "body": body})
        })
        .collect();
    let req = if all.len() == 1 {
        all[0].to_string()
    } else {
        serde_json::Value::Array(all).to_string()
    };
    post_publish(sock, &req)
}

/// `POST /publish` with `req`; anything but 200 is an error with the server's answer.
fn post_publish(sock: &std::path::Path, req: &str) -> Result<(), String> {
    let (status, resp) = ringcast::admin::request(sock, "POST", "/publish", Some(req.as_bytes()))?;
    if status == 200 {
        Ok(())
    } else {
        Err(format!(
            "publish: HTTP {status}: {}",
            String::from_utf8_lossy(&resp)
        ))
    }
}

pub(crate) fn admin_publish(
    sock: &std::path::Path,
    project: &str,
    topic: &str,
    body: &str,
) -> Result<(), String> {
    let req = json!({"project": project, "destination": format!("/topic/{topic}"), "body": body});
    post_publish(sock, &req.to_string())
}
