//! The store alone: numbering, bounds, and what a position recovers.

use std::sync::Arc;

use bytes::Bytes;
use ringcast_proto::history::{Config as HistoryConfig, Position};

use super::History;
use crate::config::{Config, Project};
use crate::hub::{Dest, Publish};

fn store(size: usize, ttl_ms: u64) -> History {
    let mut cfg = Config::default();
    cfg.projects.insert(
        "p".into(),
        Project {
            history: Some(HistoryConfig {
                size,
                ttl_ms,
                topics: vec!["news".into()],
                queues: vec![],
            }),
            ..Project::default()
        },
    );
    History::new(&cfg, Arc::new(crate::stats::Stats::new(1)))
}

fn topic(t: &str) -> Dest {
    Dest::Topic {
        project: "p".into(),
        topic: t.into(),
    }
}

fn publish(h: &History, t: &str, body: &'static str) -> Arc<Publish> {
    h.record(
        Publish::new(topic(t), Bytes::from_static(body.as_bytes()), vec![]),
        |m| m,
    )
}

fn at(h: &History, offset: u64) -> Position {
    Position {
        epoch: h.epoch().to_string(),
        offset,
    }
}

#[test]
fn offsets_count_per_destination_and_only_where_history_is_kept() {
    let h = store(10, 60_000);
    assert_eq!(publish(&h, "news", "a").position.as_ref().unwrap().0, 1);
    assert_eq!(publish(&h, "news", "b").position.as_ref().unwrap().0, 2);
    assert!(publish(&h, "sports", "x").position.is_none());
    assert_eq!(h.len(), 2);
}

#[test]
fn a_position_recovers_exactly_what_came_after_it() {
    let h = store(10, 60_000);
    for b in ["1", "2", "3", "4"] {
        publish(&h, "news", b);
    }
    let r = h.replay(&topic("news"), &at(&h, 2));
    assert!(r.recovered);
    assert_eq!(r.through, 4);
    let got: Vec<_> = r
        .entries
        .iter()
        .map(|e| (e.offset, e.body.clone()))
        .collect();
    assert_eq!(got, [(3, Bytes::from("3")), (4, Bytes::from("4"))]);
    // Up to date: recovered, nothing to replay.
    let r = h.replay(&topic("news"), &at(&h, 4));
    assert!(r.recovered && r.entries.is_empty());
}

#[test]
fn too_old_another_epoch_or_a_future_offset_is_not_recovered() {
    let h = store(3, 60_000);
    for b in ["1", "2", "3", "4", "5"] {
        publish(&h, "news", b);
    }
    // Kept: 3, 4, 5. From 2 on is still whole; from 1 on misses 2.
    assert!(h.replay(&topic("news"), &at(&h, 2)).recovered);
    assert!(!h.replay(&topic("news"), &at(&h, 1)).recovered);
    let other = Position {
        epoch: "0000000000000000".into(),
        offset: 4,
    };
    assert!(!h.replay(&topic("news"), &other).recovered);
    assert!(!h.replay(&topic("news"), &at(&h, 9)).recovered);
    // A stream nothing was published to: only "nothing yet" recovers.
    assert!(h.replay(&topic("quiet"), &at(&h, 0)).recovered);
    assert!(!h.replay(&topic("quiet"), &at(&h, 1)).recovered);
}

#[test]
fn messages_older_than_the_ttl_are_forgotten() {
    let h = store(10, 1);
    publish(&h, "news", "old");
    std::thread::sleep(std::time::Duration::from_millis(5));
    publish(&h, "news", "new");
    let r = h.replay(&topic("news"), &at(&h, 0));
    assert!(!r.recovered, "offset 1 expired");
    let r = h.replay(&topic("news"), &at(&h, 1));
    assert!(r.recovered && r.entries.len() == 1);
}

#[test]
fn two_starts_have_two_epochs() {
    assert_ne!(store(1, 1).epoch(), store(1, 1).epoch());
}

#[test]
fn the_gauges_follow_what_is_kept() {
    let h = store(2, 60_000);
    for b in ["1", "2", "3"] {
        publish(&h, "news", b);
    }
    let st = &h.stats.history;
    assert!(st.enabled.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(st.messages.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(st.recorded.load(std::sync::atomic::Ordering::Relaxed), 3);
    h.replay(&topic("news"), &at(&h, 0));
    assert_eq!(st.replays.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(st.unrecovered.load(std::sync::atomic::Ordering::Relaxed), 1);
}
