//! History in Redis: the two Lua scripts that number a destination's messages and read them
//! back, and the pure functions that turn a read into what a recovering subscription gets.
//!
//! Numbering runs in Redis, atomically with the publish, so every node agrees on offsets and
//! sees a destination's messages in one order: the script assigns the next offset, appends the
//! message to the destination's stream (`XADD … MAXLEN ~ size`, entry id `OFFSET-0`) and
//! publishes it with its position on the destination's channel, where every node (the
//! publishing one too) picks it up. A destination's epoch lives beside its offset in a hash;
//! when that hash is gone (a Redis flush, or `META_TTL_MS` without a publish), the next
//! script draws a new epoch and clients of the old one are told they cannot recover.

use redis::Value;
use ringcast_proto::cluster::wire;
use ringcast_proto::history::Position;

use crate::history::{Bounds, Entry, Replay, Snapshot};

/// How long a destination's epoch and offset outlive its last publish. Past it, the offsets
/// start again under a new epoch; positions that old are past any `ttl_ms` anyway.
pub const META_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Lua writes `wire::POSITIONED` as `'RCP1'` below.
/// KEYS: meta hash, stream, channel. ARGV: message (`wire::encode`), an epoch to use if the
/// destination has none, size, ttl_ms, META_TTL_MS, the publish command (`SPUBLISH` on a
/// Redis Cluster, where the channel shares the keys' slot). Returns {offset, subscribers}.
pub const NUMBER: &str = r"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  e = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
  redis.call('DEL', KEYS[2])
end
local o = redis.call('HINCRBY', KEYS[1], 'o', 1)
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], o .. '-0', 't', now, 'p', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local n = redis.call(ARGV[6], KEYS[3], 'RCP1' .. e .. ':' .. o .. '\n' .. ARGV[1])
return {o, n}
";

/// KEYS: meta hash, stream. ARGV: an epoch to use if the destination has none, META_TTL_MS.
/// Returns {now_ms, epoch, last offset, XRANGE of the whole stream}. A destination nothing was
/// published to gets its epoch here, so a client's first position is already of it.
pub const READ: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if redis.call('HSETNX', KEYS[1], 'e', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'o', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
return {now, m[1], m[2], redis.call('XRANGE', KEYS[2], '-', '+')}
";

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The NUMBER script's answer: (offset, subscribers of the channel).
pub fn numbered(v: &Value) -> Option<(u64, u64)> {
    match v {
        Value::Array(a) if a.len() == 2 => Some((int(&a[0])?, int(&a[1])?)),
        _ => None,
    }
}

/// The READ script's answer as a snapshot, or why it is not one. Entries that do not decode
/// (written by something else) are left out, which makes positions before them unrecoverable.
pub fn snapshot(v: &Value) -> Result<Snapshot, String> {
    let bad = || "Redis answered the history read with something else".to_string();
    let Value::Array(a) = v else {
        return Err(bad());
    };
    let [now, epoch, last, Value::Array(stream)] = a.as_slice() else {
        return Err(bad());
    };
    let now = int(now).ok_or_else(bad)?;
    let epoch = std::str::from_utf8(bytes(epoch).ok_or_else(bad)?).map_err(|_| bad())?;
    let last = int(last).ok_or_else(bad)?;
    let entries = stream.iter().filter_map(|e| entry(e, now)).collect();
    Ok(Snapshot {
        epoch: epoch.into(),
        last,
        entries,
    })
}

/// One XRANGE entry `[id, [field, value, ...]]` as (entry, age in ms).
fn entry(v: &Value, now: u64) -> Option<(Entry, u64)> {
    let Value::Array(pair) = v else { return None };
    let [id, Value::Array(fields)] = pair.as_slice() else {
        return None;
    };
    let id = std::str::from_utf8(bytes(id)?).ok()?;
    let offset = id.strip_suffix("-0")?.parse().ok()?;
    let (mut t, mut p) = (None, None);
    for kv in fields.chunks(2) {
        match (kv.first().and_then(bytes), kv.get(1)) {
            (Some(b"t"), Some(v)) => t = int(v),
            (Some(b"p"), Some(v)) => p = bytes(v),
            _ => {}
        }
    }
    let m = wire::decode(p?)?;
    Some((
        Entry::new(offset, m.body, m.headers),
        now.saturating_sub(t?),
    ))
}

/// What a subscription at `since` gets from `snap`, judged as the node's store judges: the
/// same epoch, no newer than the last offset, and nothing missed that is no longer kept.
pub fn decide(snap: &Snapshot, since: &Position, bounds: &Bounds) -> Replay {
    let kept: Vec<&Entry> = snap
        .entries
        .iter()
        .filter(|(e, age)| {
            *age <= bounds.ttl_ms
                && e.offset <= snap.last
                && snap.last - e.offset < bounds.size as u64
        })
        .map(|(e, _)| e)
        .collect();
    let oldest = kept.first().map_or(snap.last + 1, |e| e.offset);
    let contiguous = kept.windows(2).all(|w| w[1].offset == w[0].offset + 1);
    let recovered = since.epoch == *snap.epoch
        && since.offset <= snap.last
        && since.offset + 1 >= oldest
        && contiguous;
    Replay {
        recovered,
        entries: if recovered {
            kept.into_iter()
                .filter(|e| e.offset > since.offset)
                .cloned()
                .collect()
        } else {
            Vec::new()
        },
        through: snap.last,
        epoch: snap.epoch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn xentry(offset: u64, t: u64, body: &str) -> Value {
        Value::Array(vec![
            bulk(&format!("{offset}-0")),
            Value::Array(vec![
                bulk("t"),
                bulk(&t.to_string()),
                bulk("p"),
                Value::BulkString(wire::encode("n1", &[], body.as_bytes())),
            ]),
        ])
    }

    fn read(entries: Vec<Value>, last: u64) -> Snapshot {
        snapshot(&Value::Array(vec![
            Value::Int(10_000),
            bulk("ep"),
            bulk(&last.to_string()),
            Value::Array(entries),
        ]))
        .unwrap()
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    const BOUNDS: Bounds = Bounds {
        size: 3,
        ttl_ms: 5_000,
    };

    #[test]
    fn a_read_decodes_and_decides_like_the_local_store() {
        let snap = read(
            (2..=5).map(|o| xentry(o, 9_000, &o.to_string())).collect(),
            5,
        );
        assert_eq!(snap.entries.len(), 4);
        assert_eq!(snap.entries[0].1, 1_000, "age from Redis's own clock");
        // size 3: 3, 4, 5 are kept.
        let r = decide(&snap, &at("ep", 2), &BOUNDS);
        assert!(r.recovered);
        assert_eq!(
            r.entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert!(!decide(&snap, &at("ep", 1), &BOUNDS).recovered);
        assert!(!decide(&snap, &at("other", 4), &BOUNDS).recovered);
        assert!(!decide(&snap, &at("ep", 6), &BOUNDS).recovered);
        let up_to_date = decide(&snap, &at("ep", 5), &BOUNDS);
        assert!(up_to_date.recovered && up_to_date.entries.is_empty());
    }

    #[test]
    fn expired_or_missing_entries_are_not_recovered() {
        let snap = read(vec![xentry(4, 1_000, "old"), xentry(5, 9_000, "new")], 5);
        assert!(!decide(&snap, &at("ep", 3), &BOUNDS).recovered, "4 expired");
        assert!(decide(&snap, &at("ep", 4), &BOUNDS).recovered);
        let holed = read(vec![xentry(3, 9_000, "a"), xentry(5, 9_000, "c")], 5);
        assert!(!decide(&holed, &at("ep", 2), &BOUNDS).recovered);
        // A stream nothing was published to: position 0 of its epoch is up to date.
        let empty = read(vec![], 0);
        assert!(decide(&empty, &at("ep", 0), &BOUNDS).recovered);
    }

    #[test]
    fn odd_answers_are_errors_not_panics() {
        assert!(snapshot(&Value::Nil).is_err());
        assert!(snapshot(&Value::Array(vec![Value::Int(1)])).is_err());
        let junk = read(vec![Value::Int(3), bulk("x")], 2);
        assert!(junk.entries.is_empty());
        assert_eq!(
            numbered(&Value::Array(vec![Value::Int(7), Value::Int(2)])),
            Some((7, 2))
        );
        assert_eq!(numbered(&Value::Nil), None);
    }
}
