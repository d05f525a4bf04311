//! The client subcommands: each talks to a running server through its admin socket.

pub mod doctor;
pub mod push;
pub mod reconnect;
pub mod stats;
pub mod token;
pub mod upgrade;

use std::path::{Path, PathBuf};

use crate::config::{Config, Overrides};

/// Finds the admin socket the way the server does: flag, else config file, else the default.
pub fn admin_socket(config: Option<&Path>, flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = flag {
        return Ok(p);
    }
    Ok(crate::admin::socket_path(&Config::load(
        config,
        &Overrides::default(),
    )?))
}

/// Turns an admin answer into the JSON body, or an error message carrying its `error`.
pub fn json_body((status, body): (u16, Vec<u8>)) -> Result<serde_json::Value, String> {
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()))?;
    if status >= 400 {
        let msg = v["error"].as_str().unwrap_or("request failed");
        return Err(format!("HTTP {status}: {msg}"));
    }
    Ok(v)
}
