//! History and recovery, the parts without I/O: which destinations keep their recent messages
//! (`[projects.P.history]`), stream positions (`EPOCH:OFFSET`) as clients write them, what a
//! recovering subscription asks the shard for, and the raw-mode envelope that carries a
//! message's position.
//!
//! A destination with history numbers its messages: offsets grow by one per publish; the epoch
//! names one life of the stream (a node's start), so a client never takes a new stream's
//! offsets for the old one's.

use serde::{Deserialize, Serialize};

use crate::dest::Dest;

/// `[projects.P.history]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Messages kept per destination (the oldest go first).
    pub size: usize,
    /// Messages older than this are forgotten.
    pub ttl_ms: u64,
    /// Topics that keep history: names and `*` patterns.
    pub topics: Vec<String>,
    /// User queues that keep history (every user's queue of that name): names and patterns.
    pub queues: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            size: 100,
            ttl_ms: 300_000,
            topics: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl Config {
    /// Whether `dest` keeps history under this configuration.
    pub fn covers(&self, dest: &Dest) -> bool {
        let (patterns, name) = match dest {
            Dest::Topic { topic, .. } => (&self.topics, topic),
            Dest::User { queue, .. } => (&self.queues, queue),
        };
        patterns.iter().any(|p| crate::access::matches(p, name))
    }
}

/// A position in a destination's stream: the last message a client has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's life this offset belongs to.
    pub epoch: String,
    /// The last offset the client got (0: none yet).
    pub offset: u64,
}

/// The longest epoch a client may name (ours are 16 hex digits).
const MAX_EPOCH: usize = 64;

impl Position {
    /// Parses `EPOCH:OFFSET` (STOMP `x-recover-since`; after the topic in raw `since=`).
    pub fn parse(s: &str) -> Result<Position, String> {
        let bad =
            || format!("a position is EPOCH:OFFSET (as x-epoch and x-offset gave it), not {s:?}");
        let (epoch, offset) = s.rsplit_once(':').ok_or_else(bad)?;
        if epoch.is_empty()
            || epoch.len() > MAX_EPOCH
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad());
        }
        if offset.is_empty() || !offset.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let offset = offset.parse().map_err(|_| bad())?;
        Ok(Position {
            epoch: epoch.to_string(),
            offset,
        })
    }
}

/// A subscription that wants what it missed since `since`: the shard replays it, answers the
/// receipt (with `x-recovered`), and keeps live messages the replay already covered from
/// arriving twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recover {
    /// The STOMP subscription id (raw sessions: `topic=NAME`).
    pub id: String,
    /// The destination as the client wrote it (STOMP's `destination` header).
    pub written: String,
    /// The destination it resolved to.
    pub dest: Dest,
    /// The last position the client has.
    pub since: Position,
    /// The SUBSCRIBE's receipt, answered by the shard once it knows the outcome.
    pub receipt: Option<String>,
}

/// A raw-mode message with its position (`?positions=1`): one JSON text frame,
/// `{"topic":…,"epoch":…,"offset":…,"data":…}` (without `epoch` and `offset` for a topic that
/// keeps no history); a body that is not UTF-8 travels as `"data_base64"` instead of `"data"`.
pub fn envelope(topic: &str, position: Option<(&str, u64)>, body: &[u8]) -> String {
    let mut v = serde_json::json!({"topic": topic});
    if let Some((epoch, offset)) = position {
        v["epoch"] = serde_json::Value::from(epoch);
        v["offset"] = serde_json::Value::from(offset);
    }
    match std::str::from_utf8(body) {
        Ok(text) => v["data"] = serde_json::Value::from(text),
        Err(_) => {
            use base64::Engine;
            v["data_base64"] =
                serde_json::Value::from(base64::engine::general_purpose::STANDARD.encode(body));
        }
    }
    v.to_string()
}

/// The first raw-mode frame of a recovering topic: whether what it missed follows.
pub fn recovered_notice(topic: &str, epoch: &str, recovered: bool) -> String {
    serde_json::json!({"topic": topic, "epoch": epoch, "recovered": recovered}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_strictly() {
        assert_eq!(
            Position::parse("a1b2:42").unwrap(),
            Position {
                epoch: "a1b2".into(),
                offset: 42
            }
        );
        for bad in [
            "",
            "42",
            ":1",
            "e:",
            "e:-1",
            "e:+1",
            "e:1x",
            "e e:1",
            "e:99999999999999999999999",
        ] {
            assert!(Position::parse(bad).is_err(), "{bad}");
        }
        assert!(Position::parse(&format!("{}:1", "e".repeat(65))).is_err());
    }

    #[test]
    fn history_covers_topics_and_queues_by_pattern() {
        let c = Config {
            topics: vec!["news".into(), "orders.*".into()],
            queues: vec!["inbox".into()],
            ..Config::default()
        };
        let topic = |t: &str| Dest::Topic {
            project: "p".into(),
            topic: t.into(),
        };
        assert!(c.covers(&topic("news")) && c.covers(&topic("orders.eu")));
        assert!(!c.covers(&topic("sports")));
        let queue = |q: &str| Dest::User {
            project: "p".into(),
            user: "u".into(),
            queue: q.into(),
        };
        assert!(c.covers(&queue("inbox")) && !c.covers(&queue("other")));
    }

    #[test]
    fn the_envelope_is_json_with_the_body_as_text_or_base64() {
        let v: serde_json::Value =
            serde_json::from_str(&envelope("t", Some(("e1", 7)), b"hi")).unwrap();
        assert_eq!(v["data"], "hi");
        assert_eq!(v["offset"], 7);
        let v: serde_json::Value = serde_json::from_str(&envelope("t", None, &[0xff, 0])).unwrap();
        assert_eq!(v["data_base64"], "/wA=");
        assert!(v.get("offset").is_none());
    }
}
