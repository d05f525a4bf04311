//! The reconnect estimate `ringcast doctor` reports: how long a full node's clients take to
//! come back after it stops without handing them over, at the connect rates measured on the
//! project machine (BENCHMARKS.md) and the token verification cost of the slowest algorithm
//! configured (`ringcast-bench jwt`). A storm that takes longer than a minute is worth
//! knowing before it happens: pace restarts with `drain_ms`, shed with
//! `max_handshakes_per_s`, have clients back off with jitter, or add nodes.

use crate::config::Config;

/// Raw connections accepted and upgraded per second per core: 1,000,000 at 34,712/s on two
/// cores shared with the load generator (BENCHMARKS.md, `make c1m`).
const RAW_PER_CORE_S: f64 = 17_000.0;
/// STOMP sessions (upgrade, CONNECT with an HS256 token, SUBSCRIBE) per second per core:
/// 1,000,000 at 14,261/s on the same box.
const STOMP_PER_CORE_S: f64 = 7_000.0;
/// What one verification costs beyond HS256's, in µs, per `ringcast-bench jwt` here
/// (RS256 2048-bit 174 µs, ES256 249 µs, HS256 2 µs).
fn verify_extra_us(alg: &str) -> f64 {
    match alg {
        "RS256" => 172.0,
        "ES256" => 247.0,
        _ => 0.0,
    }
}

/// The estimate for `n` connections over `cores` shards' cores: (connections per second,
/// seconds to reconnect them all, what the rate rests on).
pub fn estimate(cfg: &Config, n: u64, cores: usize) -> (f64, f64, String) {
    let cores = cores.max(1) as f64;
    let (mut per_s, mut basis) = if cfg.auth.enabled {
        let slowest = cfg
            .projects
            .values()
            .filter_map(|p| p.jwt_alg.as_deref())
            .max_by(|a, b| verify_extra_us(a).total_cmp(&verify_extra_us(b)))
            .unwrap_or("HS256");
        let us = 1e6 / STOMP_PER_CORE_S + verify_extra_us(slowest);
        (
            cores * 1e6 / us,
            format!("STOMP with {slowest} tokens on {cores} cores"),
        )
    } else {
        (cores * RAW_PER_CORE_S, format!("raw on {cores} cores"))
    };
    let limit = cfg.limits.max_handshakes_per_s;
    if limit > 0 && (limit as f64) < per_s {
        per_s = limit as f64;
        basis = format!("limits.max_handshakes_per_s = {limit}");
    }
    (per_s, n as f64 / per_s, basis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Project;

    #[test]
    fn the_slowest_algorithm_and_the_limit_bound_the_rate() {
        let mut cfg = Config::embedded();
        let (raw, t, _) = estimate(&cfg, 1_000_000, 2);
        assert_eq!(raw, 34_000.0);
        assert!((29.0..30.0).contains(&t), "{t}");
        cfg.auth.enabled = true;
        for (name, alg) in [("a", "HS256"), ("b", "ES256")] {
            let p = Project {
                jwt_alg: Some(alg.into()),
                ..Default::default()
            };
            cfg.projects.insert(name.into(), p);
        }
        let (es, _, basis) = estimate(&cfg, 1_000_000, 2);
        assert!(es < 14_000.0 / 2.0, "{es}");
        assert!(basis.contains("ES256"), "{basis}");
        cfg.limits.max_handshakes_per_s = 500;
        let (r, t, basis) = estimate(&cfg, 1_000_000, 2);
        assert_eq!((r, t), (500.0, 2000.0));
        assert!(basis.contains("max_handshakes_per_s"), "{basis}");
    }
}
