//! What verifying a token costs, per core: HS256, RS256 (2048-bit) and ES256 tokens verified
//! one after another on one thread through the server's own `Auth::verify` (the path a STOMP
//! CONNECT or a raw upgrade takes), each token a different user, so nothing is reused. A
//! STOMP reconnect storm is bounded by this figure times the cores.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringcast::auth::Auth;
use ringcast::config::{Config, Project};
use serde_json::{Value, json};

/// What `ringcast-bench jwt` is told.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// How long each algorithm is measured.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Distinct tokens minted per algorithm (verified round-robin).
    #[arg(long, default_value_t = 2000)]
    tokens: usize,
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("running openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A project signing with `alg`; keys are made with openssl in `dir`.
fn project(alg: &str, dir: &Path) -> Result<Project, String> {
    let mut p = Project {
        jwt_alg: Some(alg.into()),
        ..Default::default()
    };
    if alg == "HS256" {
        p.jwt_secret = Some("bench-secret-0123456789abcdef0123456789".into());
        return Ok(p);
    }
    let key = dir.join(format!("{alg}.key"));
    let public = dir.join(format!("{alg}.pub"));
    let (k, pubk) = (key.to_str().unwrap(), public.to_str().unwrap());
    if alg == "RS256" {
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            k,
        ])?;
    } else {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            k,
        ])?;
    }
    openssl(&["pkey", "-in", k, "-pubout", "-out", pubk])?;
    p.jwt_private_key = Some(key);
    p.jwt_public_key = Some(public);
    Ok(p)
}

pub(crate) fn run(a: &Args) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("ringcast-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for alg in ["HS256", "RS256", "ES256"] {
        let mut cfg = Config::embedded();
        cfg.auth.enabled = true;
        cfg.projects.insert("p".into(), project(alg, &dir)?);
        let auth = Auth::from_config(&cfg, ringcast::clock::unix_s())?;
        let tokens: Vec<String> = (0..a.tokens.max(1))
            .map(|i| auth.mint("p", &format!("user-{i}"), 3600))
            .collect::<Result<_, _>>()?;
        let budget = Duration::from_secs_f64(a.seconds);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            // The clock is read once per 64, not per token.
            for _ in 0..64 {
                let t = &tokens[n as usize % tokens.len()];
                auth.verify("p", t).map_err(|e| format!("{alg}: {e}"))?;
                n += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let per_s = n as f64 / secs;
        println!(
            "{alg}: {n} verified in {secs:.2} s on one thread: {per_s:.0}/s, {:.1} µs each",
            1e6 / per_s
        );
        rows.push(json!({"alg": alg, "verified": n, "seconds": secs, "per_s": per_s.round()}));
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(json!({"ok": true, "jwt": rows}))
}
