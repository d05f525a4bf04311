//! `ringcast token`: mints a JWT with a project's configured key, for testing clients.

use std::path::Path;

use crate::auth::Auth;
use crate::config::{Config, Overrides};

/// Parses `90`, `45s`, `30m`, `1h`, `7d` into seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid ttl {s:?}: use e.g. 90, 45s, 30m, 1h, 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid ttl unit {unit:?}: use s, m, h or d")),
    };
    Ok(n * mult)
}

pub fn run(
    config: Option<&Path>,
    project: &str,
    user: &str,
    ttl: &str,
    channels: Option<&[String]>,
) -> Result<String, String> {
    let mut cfg = Config::load(config, &Overrides::default())?;
    // Minting needs keys, not the auth switch: a --no-auth test server still gets real tokens.
    cfg.auth.enabled = false;
    if cfg.projects.is_empty() {
        return Err("no [projects.NAME] with a key in the config: pass --config FILE".into());
    }
    Auth::from_config(&cfg, crate::clock::unix_s())?.mint_granting(
        project,
        user,
        parse_ttl(ttl)?,
        channels,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttls() {
        assert_eq!(super::parse_ttl("90"), Ok(90));
        assert_eq!(super::parse_ttl("30m"), Ok(1800));
        assert_eq!(super::parse_ttl("1h"), Ok(3600));
        assert!(super::parse_ttl("1y").is_err());
        assert!(super::parse_ttl("h").is_err());
    }
}
