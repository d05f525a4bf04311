//! The store alone: numbering, bounds, and what a position recovers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use ringcast_proto::history::{Config as HistoryConfig, Position};

use super::History;
use crate::config::{Config, Project};
use ringcast_proto::publish::Publish;

use crate::dest::Dest;

fn replay(h: &History, dest: &Dest, since: &Position) -> super::Replay {
    h.replay(dest, since)
        .expect("a standalone store always answers")
}

fn store(size: usize, ttl_ms: u64) -> History {
    History::new(&config(size, ttl_ms), Arc::new(crate::stats::Stats::new(1)))
}

/// A cluster node's store: a cache of what Redis numbers.
fn cache(size: usize) -> History {
    let mut cfg = config(size, 60_000);
    cfg.cluster.redis = Some("redis://127.0.0.1:1".into());
    History::new(&cfg, Arc::new(crate::stats::Stats::new(1)))
}

fn config(size: usize, ttl_ms: u64) -> Config {
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
    cfg
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
    let r = replay(&h, &topic("news"), &at(&h, 2));
    assert!(r.recovered);
    assert_eq!(r.through, 4);
    let got: Vec<_> = r
        .entries
        .iter()
        .map(|e| (e.offset, e.body.clone()))
        .collect();
    assert_eq!(got, [(3, Bytes::from("3")), (4, Bytes::from("4"))]);
    // Up to date: recovered, nothing to replay.
    let r = replay(&h, &topic("news"), &at(&h, 4));
    assert!(r.recovered && r.entries.is_empty());
}

#[test]
fn too_old_another_epoch_or_a_future_offset_is_not_recovered() {
    let h = store(3, 60_000);
    for b in ["1", "2", "3", "4", "5"] {
        publish(&h, "news", b);
    }
    // Kept: 3, 4, 5. From 2 on is still whole; from 1 on misses 2.
    assert!(replay(&h, &topic("news"), &at(&h, 2)).recovered);
    assert!(!replay(&h, &topic("news"), &at(&h, 1)).recovered);
    let other = Position {
        epoch: "0000000000000000".into(),
        offset: 4,
    };
    assert!(!replay(&h, &topic("news"), &other).recovered);
    assert!(!replay(&h, &topic("news"), &at(&h, 9)).recovered);
    // A stream nothing was published to: only "nothing yet" recovers.
    assert!(replay(&h, &topic("quiet"), &at(&h, 0)).recovered);
    assert!(!replay(&h, &topic("quiet"), &at(&h, 1)).recovered);
}

#[test]
fn messages_older_than_the_ttl_are_forgotten() {
    let now = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = now.clone();
    let h = store(10, 1).with_clock(Arc::new(move || clock.load(Relaxed)));
    publish(&h, "news", "old");
    now.store(5, Relaxed);
    publish(&h, "news", "new");
    let r = replay(&h, &topic("news"), &at(&h, 0));
    assert!(!r.recovered, "offset 1 expired");
    let r = replay(&h, &topic("news"), &at(&h, 1));
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
    replay(&h, &topic("news"), &at(&h, 0));
    assert_eq!(st.replays.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(st.unrecovered.load(std::sync::atomic::Ordering::Relaxed), 1);
}

fn numbered(offset: u64, epoch: &str) -> Publish {
    let mut p = Publish::new(topic("news"), Bytes::from(offset.to_string()), vec![]);
    p.position = Some((offset, epoch.into()));
    p
}

fn pos(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.into(),
        offset,
    }
}

#[test]
fn a_cluster_cache_answers_only_what_it_saw() {
    let h = cache(10);
    let news = topic("news");
    assert!(
        h.replay(&news, &pos("e1", 0)).is_none(),
        "nothing cached yet"
    );
    // An unnumbered message (from a node without history) is delivered, not kept.
    assert!(
        h.record(Publish::new(news.clone(), Bytes::new(), vec![]), |m| m)
            .position
            .is_none()
    );
    for o in 5..=8 {
        h.record(numbered(o, "e1"), |_| ());
    }
    let r = h.replay(&news, &pos("e1", 6)).unwrap();
    assert!(r.recovered);
    assert_eq!(
        r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [7, 8]
    );
    assert_eq!((r.through, &*r.epoch), (8, "e1"));
    assert!(h.replay(&news, &pos("e1", 8)).unwrap().entries.is_empty());
    // Older than what arrived live, another epoch, or ahead of the cache: Redis decides.
    assert!(h.replay(&news, &pos("e1", 3)).is_none());
    assert!(h.replay(&news, &pos("e0", 6)).is_none());
    assert!(h.replay(&news, &pos("e1", 9)).is_none());
    // A hole (the node was not listening) starts the cache over.
    h.record(numbered(11, "e1"), |_| ());
    assert!(h.replay(&news, &pos("e1", 8)).is_none());
    assert_eq!(h.len(), 1);
}

#[test]
fn a_merged_read_makes_the_cache_complete() {
    let h = cache(3);
    let news = topic("news");
    // Live 6 arrived before the read's answer, which saw up to 5.
    h.record(numbered(6, "e1"), |_| ());
    let entries = (3..=5)
        .map(|o| {
            let p = numbered(o, "e1");
            (super::Entry::new(o, p.body.clone(), vec![]), 10)
        })
        .collect();
    h.merge(
        &news,
        &super::Snapshot {
            epoch: "e1".into(),
            last: 5,
            entries,
        },
    );
    // Kept: 4, 5, 6 (size 3): 3 and older are gone for good, and the cache can say so.
    let r = h.replay(&news, &pos("e1", 3)).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert!(!h.replay(&news, &pos("e1", 2)).unwrap().recovered);
    assert!(!h.replay(&news, &pos("e0", 5)).unwrap().recovered);
    // A late live copy of 5 is delivered but not kept twice.
    h.record(numbered(5, "e1"), |_| ());
    assert_eq!(h.len(), 3);
    h.forget(Some(&news.key()));
    assert!(h.is_empty() && h.replay(&news, &pos("e1", 5)).is_none());
    assert_eq!(
        h.stats
            .history
            .messages
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_saved_store_goes_on_in_another_with_its_epoch_offsets_and_ages() {
    let h = store(10, 60_000).with_clock(Arc::new(|| 50_000));
    for b in ["1", "2", "3"] {
        publish(&h, "news", b);
    }
    let before = at(&h, 1);
    // Through JSON, as it travels to the successor.
    let saved: super::Saved =
        serde_json::from_slice(&serde_json::to_vec(&h.save()).unwrap()).unwrap();
    let next = store(10, 60_000).restored(saved);
    assert_eq!(next.epoch(), h.epoch());
    assert_eq!(next.len(), 3);
    let r = replay(&next, &topic("news"), &before);
    assert!(r.recovered);
    let got: Vec<_> = r.entries.iter().map(|e| e.offset).collect();
    assert_eq!(got, [2, 3]);
    assert_eq!(publish(&next, "news", "4").position.as_ref().unwrap().0, 4);
}
