//! The sustained scenarios: publishes at a steady rate for a while, to topics or to users,
//! each body stamped with its send time, then every delivery awaited; what the server's CPU
//! spent meanwhile.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::*;

/// Server CPU seconds used since `before`, when both readings exist.
fn cpu_since(before: Option<f64>, server_cpu: &dyn Fn() -> Option<f64>) -> Option<f64> {
    Some(server_cpu()? - before?)
}

/// Waits (at most `timeout_s`) until `expected` deliveries arrived after `before`; returns
/// how many did.
fn await_deliveries(shared: &client::Shared, before: u64, expected: u64, timeout_s: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    while shared.received.load(Relaxed) - before < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    shared.received.load(Relaxed) - before
}

/// Publishes to topics: (topic, body).
pub(crate) type PublishFn<'a> = dyn Fn(&str, &str) -> Result<(), String> + Sync + 'a;
/// Publishes to users, many per request: (connection index, body), for user `bench-I`.
pub(crate) type UnicastFn<'a> = dyn Fn(&[(usize, String)]) -> Result<(), String> + Sync + 'a;

/// `a.rate` publishes per second for `a.duration` seconds, each to one random user of the
/// `connected` sessions (user `bench-I` is connection I), `a.batch` per request, each body
/// stamped with its send time; then waits for every delivery.
pub(crate) fn sustain_unicast(
    a: &Load,
    connected: u64,
    (shared, epoch): (&client::Shared, Instant),
    publish: &UnicastFn<'_>,
    server_cpu: &dyn Fn() -> Option<f64>,
) -> Result<Value, String> {
    let received_before = shared.received.load(Relaxed);
    let cpu_before = server_cpu();
    let start = Instant::now();
    let batch = a.batch.max(1) as u64;
    let requests = (u64::from(a.rate) * a.duration).div_ceil(batch);
    let users = a.connections.min(connected as usize).max(1);
    eprintln!(
        "sustained unicast: {} publishes/s to random users of {users}, {batch} per request, for {} s",
        a.rate, a.duration
    );
    const PUBLISHERS: u64 = 4;
    let sent: Vec<Result<u64, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PUBLISHERS)
            .map(|w| {
                scope.spawn(move || -> Result<u64, String> {
                    // xorshift: cheap, and each publisher its own sequence.
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w + 1);
                    let mut sent = 0;
                    let mut items = Vec::with_capacity(batch as usize);
                    for r in (w..requests).step_by(PUBLISHERS as usize) {
                        let due =
                            start + Duration::from_secs_f64((r * batch) as f64 / f64::from(a.rate));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        items.clear();
                        for _ in 0..batch {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let body = stamped(epoch, a.size, a.json_body);
                            items.push(((x % users as u64) as usize, body));
                        }
                        publish(&items)?;
                        sent += batch;
                    }
                    Ok(sent)
                })
            })
            .collect();
        join_all(workers)
    });
    let mut total = 0;
    for s in sent {
        total += s?;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let cpu_s = cpu_since(cpu_before, server_cpu);
    let delivered = await_deliveries(shared, received_before, total, a.timeout);
    let all_s = start.elapsed().as_secs_f64();
    eprintln!(
        "sustained unicast: {total} publishes in {publish_s:.1} s ({:.0}/s), {delivered}/{total} delivered ({:.0}/s until the last), server CPU {}",
        total as f64 / publish_s,
        delivered as f64 / all_s,
        cpu_s.map_or("not measured".into(), |c| format!("{c:.1} s"))
    );
    Ok(json!({
        "rate_target": a.rate, "publishes": total, "publish_seconds": publish_s,
        "rate_achieved": total as f64 / publish_s, "batch": batch, "unicast_users": users,
        "expected": total, "delivered": delivered, "deliveries_per_second": delivered as f64 / all_s,
        "server_cpu_seconds": cpu_s,
    }))
}

/// `a.rate` publishes per second for `a.duration` seconds, round-robin over the topics, each
/// body stamped with its send time; then waits for every expected delivery.
pub(crate) fn sustain(
    a: &Load,
    topic: &str,
    connected: u64,
    (shared, epoch): (&client::Shared, Instant),
    publish: &(dyn Fn(&str, &str) -> Result<(), String> + Sync),
    server_cpu: &dyn Fn() -> Option<f64>,
) -> Result<Value, String> {
    let topics = a.topics.max(1);
    // Subscribers per topic, assuming the connected ones are spread like the planned ones.
    let per_topic: Vec<u64> = (0..topics)
        .map(|t| (a.connections - t).div_ceil(topics) as u64)
        .collect();
    let received_before = shared.received.load(Relaxed);
    let cpu_before = server_cpu();
    let start = Instant::now();
    let total = u64::from(a.rate) * a.duration;
    eprintln!(
        "sustained: {} publishes/s over {topics} topics ({} subscribers each) for {} s",
        a.rate, per_topic[0], a.duration
    );
    // Several publishers, so one slow answer does not hold back the schedule.
    const PUBLISHERS: u64 = 4;
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PUBLISHERS)
            .map(|w| {
                let per_topic = &per_topic;
                scope.spawn(move || -> Result<(u64, u64), String> {
                    let (mut sent, mut expected) = (0u64, 0u64);
                    for i in (w..total).step_by(PUBLISHERS as usize) {
                        let due = start + Duration::from_secs_f64(i as f64 / f64::from(a.rate));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let t = (i % topics as u64) as usize;
                        let body = stamped(epoch, a.size, a.json_body);
                        publish(&a.topic_of(topic, t), &body)?;
                        sent += 1;
                        expected += per_topic[t];
                    }
                    Ok((sent, expected))
                })
            })
            .collect();
        join_all(workers)
    });
    let (mut sent, mut expected) = (0u64, 0u64);
    for r in results {
        let (s, e) = r?;
        sent += s;
        expected += e;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let cpu_s = cpu_since(cpu_before, server_cpu);
    let expected = expected.min(connected * sent);
    let delivered = await_deliveries(shared, received_before, expected, a.timeout);
    eprintln!(
        "sustained: {sent} publishes in {publish_s:.1} s ({:.0}/s), {delivered}/{expected} deliveries, server CPU {}",
        sent as f64 / publish_s,
        cpu_s.map_or("not measured".into(), |c| format!("{c:.1} s"))
    );
    Ok(json!({
        "rate_target": a.rate, "publishes": sent, "publish_seconds": publish_s,
        "rate_achieved": sent as f64 / publish_s, "topics": topics,
        "expected": expected, "delivered": delivered, "server_cpu_seconds": cpu_s,
    }))
}
