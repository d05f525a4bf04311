//! Publishes through the network API as a backend would: keep-alive HTTP/1.1 connections, each
//! posting publishes (one per request, or a batch per request) as fast as the server answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What `ringcast-bench api` is told.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The API listener.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: String,
    /// An API key with the publish scope.
    #[arg(long)]
    key: String,
    #[arg(long, default_value = "default")]
    project: String,
    /// Keep-alive connections, each on its own thread.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Publishes per request (1 = single publishes; more = a JSON array).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Distinct topics the publishes cycle over.
    #[arg(long, default_value_t = 10_000)]
    topics: usize,
    /// How long to publish.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// One connection's loop; returns the publishes answered 200.
fn publish_loop(a: &Args, conn: usize, until: Instant) -> Result<u64, String> {
    let mut s = TcpStream::connect(&a.addr).map_err(|e| format!("{}: {e}", a.addr))?;
    let _ = s.set_nodelay(true);
    let mut done = 0u64;
    let mut n = conn;
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < until {
        let items: Vec<Value> = (0..a.batch)
            .map(|i| {
                let t = (n + i * a.connections) % a.topics;
                json!({"project": a.project, "destination": format!("/topic/t{t}"), "body": "x"})
            })
            .collect();
        n += a.batch * a.connections;
        let body = if a.batch == 1 {
            items[0].to_string()
        } else {
            Value::Array(items).to_string()
        };
        let req = format!(
            "POST /publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            a.key,
            body.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        // Read one answer: head, then Content-Length bytes.
        let mut got = Vec::new();
        let (head, len) = loop {
            let k = s.read(&mut buf).map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("the server closed the connection".into());
            }
            got.extend_from_slice(&buf[..k]);
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (head, end + 4 + len);
            }
        };
        while got.len() < len {
            let k = s.read(&mut buf).map_err(|e| e.to_string())?;
            if k == 0 {
                return Err("the server closed the connection".into());
            }
            got.extend_from_slice(&buf[..k]);
        }
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {head}"));
        }
        done += a.batch as u64;
    }
    Ok(done)
}

/// Runs the load and reports publishes per second.
pub(crate) fn run(a: &Args) -> Result<Value, String> {
    let start = Instant::now();
    let until = start + Duration::from_secs(a.seconds);
    let counts: Vec<Result<u64, String>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..a.connections)
            .map(|c| sc.spawn(move || publish_loop(a, c, until)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = 0;
    for c in counts {
        total += c?;
    }
    let rate = total as f64 / elapsed;
    println!(
        "api: {total} publishes in {elapsed:.1} s over {} connections, {} per request, {} topics: {rate:.0} publishes/s",
        a.connections, a.batch, a.topics
    );
    Ok(
        json!({"ok": true, "publishes": total, "seconds": elapsed, "rate": rate,
              "connections": a.connections, "batch": a.batch, "topics": a.topics}),
    )
}
