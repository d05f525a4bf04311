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

/// `POST /publish` with `req`; anything but 200 is an error with the server's answer. A 503
/// (the server hands its connections to a new process, `ringcast upgrade`) or a socket that
/// is being replaced is tried again for up to 30 s: the publish was not taken.
fn post_publish(sock: &std::path::Path, req: &str) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, resp) = loop {
        match ringcast::admin::request(sock, "POST", "/publish", Some(req.as_bytes())) {
            Ok((503, _)) | Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => break r?,
        }
    };
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
