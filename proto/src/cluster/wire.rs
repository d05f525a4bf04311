//! What ringcast puts in Redis, as pure functions: channel and key names, the payload of a
//! published message, and the control messages nodes send each other through Redis.
//!
//! Payloads come back from the network (any process may PUBLISH on our channels), so `decode`
//! takes arbitrary bytes and answers `None` for anything that is not a well-formed message; it
//! is fuzzed (`fuzz/fuzz_targets/cluster_msg.rs`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::dest::Dest;

/// First bytes of every payload: a version, so a later format can live beside this one.
const MAGIC: &[u8; 4] = b"RC1\0";
/// More headers than any valid publish may carry: a decoder never trusts a count beyond it.
const MAX_HEADERS: usize = 256;

/// Partitions of the destinations on a Redis Cluster: each is one hash tag (`{p17}`), so one
/// slot, so one master; a node subscribes a partition's channels in one `SSUBSCRIBE`.
pub const PARTITIONS: u32 = 64;

/// The Redis names of one cluster (nodes sharing a Redis can run several clusters apart by
/// giving each its own prefix).
///
/// On a Redis Cluster (`sharded`) every name carries a hash tag: the node-wide keys and
/// channels (presence, revocations, control, probes) share `{prefix}`, so presence's MULTI
/// stays in one slot; a destination's channel and history keys share its partition's tag, so
/// the history script (numbering, stream, publish) stays in one slot too.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
    sharded: bool,
    /// The prefix of the node-wide names: `prefix`, or `{prefix}` when sharded.
    global: String,
}

impl Names {
    /// The names under a cluster's `prefix`, for one Redis (or a Sentinel's master).
    pub fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
            sharded: false,
            global: prefix.to_string(),
        }
    }

    /// The names under `prefix` on a Redis Cluster.
    pub fn sharded(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_string(),
            sharded: true,
            global: format!("{{{prefix}}}"),
        }
    }

    /// Whether these are a Redis Cluster's names.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// `PUBLISH`, or `SPUBLISH` on a Redis Cluster (classic pub/sub there is broadcast to
    /// every node of the cluster; sharded pub/sub stays on the slot's master and replicas).
    pub fn publish_command(&self) -> &'static str {
        if self.sharded { "SPUBLISH" } else { "PUBLISH" }
    }

    /// The start of a destination's channel and history names: `prefix:`, or
    /// `prefix:{pN}:` with its partition when sharded.
    fn dest_prefix(&self, key: &str) -> String {
        if self.sharded {
            format!("{}:{{p{}}}:", self.prefix, partition(key))
        } else {
            format!("{}:", self.prefix)
        }
    }

    /// The pub/sub channel of a destination. Names never contain control characters (the
    /// endpoint and the admin API refuse them), so NUL separators keep the channel unambiguous
    /// whatever `:` the names hold.
    pub fn channel(&self, dest: &Dest) -> String {
        self.channel_of_key(&dest.key())
    }

    /// The channel of a shard index key (`Dest::key`).
    pub fn channel_of_key(&self, key: &str) -> String {
        format!("{}{key}", self.dest_prefix(key))
    }

    /// Destination of a channel; `None` for the control channel and foreign channels.
    pub fn dest(&self, channel: &[u8]) -> Option<Dest> {
        let mut rest = channel
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":")?;
        if self.sharded {
            let tag = rest.strip_prefix(b"{p")?;
            let end = tag.iter().position(|&b| b == b'}')?;
            rest = tag[end + 1..].strip_prefix(b":")?;
        }
        let key = std::str::from_utf8(rest).ok()?;
        // A channel under another partition than its key's is not one of ours.
        if self.sharded && self.channel_of_key(key).as_bytes() != channel {
            return None;
        }
        Dest::from_key(key)
    }

    /// Where nodes tell each other to act (disconnect a user).
    pub fn control(&self) -> String {
        format!("{}:control", self.global)
    }

    /// A node's readiness probe: it publishes here and listens here, so each probe that comes
    /// back proves publishing and delivery through Redis end to end.
    pub fn probe(&self, node: &str) -> String {
        format!("{}:probe:{node}", self.global)
    }

    /// Hash of the cluster's revocations (`POST /revoke`): field `project\nuser\njti`, value
    /// the moment (Unix seconds) its tokens were revoked up to; expires with the newest.
    pub fn revoked(&self) -> String {
        format!("{}:revoked", self.global)
    }

    /// Sorted set of nodes, scored by their last heart-beat (ms since the epoch).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.global)
    }

    /// A node's own description and counters, with a TTL.
    pub fn node(&self, node: &str) -> String {
        format!("{}:node:{node}", self.global)
    }

    /// Hash of a node's identified sessions, with a TTL.
    pub fn sessions(&self, node: &str) -> String {
        format!("{}:sessions:{node}", self.global)
    }

    /// Hash of a destination's history: its epoch (`e`) and last offset (`o`).
    pub fn history_meta(&self, key: &str) -> String {
        format!("{}hmeta:{key}", self.dest_prefix(key))
    }

    /// Stream of a destination's kept messages, entry id `OFFSET-0`.
    pub fn history_stream(&self, key: &str) -> String {
        format!("{}hist:{key}", self.dest_prefix(key))
    }
}

/// A destination key's partition (FNV-1a): the same on every node and every version.
pub fn partition(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in key.as_bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h % PARTITIONS
}

/// A name's Redis Cluster hash tag: what is between its first `{` and the next `}` when that
/// is not empty, else the whole name (the rule Redis hashes slots by). Names with one tag are
/// in one slot.
pub fn hash_tag(name: &str) -> &str {
    if let Some(open) = name.find('{')
        && let Some(len) = name[open + 1..].find('}')
        && len > 0
    {
        return &name[open + 1..open + 1 + len];
    }
    name
}

/// First bytes of a publish that Redis numbered: `RCP1EPOCH:OFFSET\n` then the message as
/// `encode` wrote it. The history script (`cluster::history`) writes this prefix in Lua.
pub const POSITIONED: &[u8; 4] = b"RCP1";

/// A numbered publish from Redis: its epoch, its offset and the message, or `None` if it is
/// malformed or not numbered.
pub fn decode_positioned(payload: &[u8]) -> Option<(String, u64, Message)> {
    let rest = payload.strip_prefix(POSITIONED)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let position = std::str::from_utf8(&rest[..nl]).ok()?;
    let p = crate::history::Position::parse(position).ok()?;
    // One spelling per position (no leading zeros): what Redis wrote, nothing else.
    if format!("{}:{}", p.epoch, p.offset) != position {
        return None;
    }
    Some((p.epoch, p.offset, decode(&rest[nl + 1..])?))
}

/// What `decode_positioned` reads (the Lua script builds the same bytes).
pub fn encode_positioned(epoch: &str, offset: u64, message: &[u8]) -> Vec<u8> {
    let mut out = POSITIONED.to_vec();
    out.extend_from_slice(format!("{epoch}:{offset}\n").as_bytes());
    out.extend_from_slice(message);
    out
}

/// A publish as it crosses Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The node that published it: it has delivered locally already and skips its own copy.
    pub origin: String,
    /// The publisher's extra STOMP headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

/// `MAGIC`, origin (u16 length + bytes), header count (u16), each header as two
/// u16-length-prefixed strings, then the body to the end.
pub fn encode(origin: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + origin.len() + body.len());
    out.extend_from_slice(MAGIC);
    put_str(&mut out, origin);
    out.extend_from_slice(&(headers.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for (k, v) in headers.iter().take(u16::MAX as usize) {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out.extend_from_slice(body);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// A publish payload from Redis, or `None` if it is malformed.
pub fn decode(payload: &[u8]) -> Option<Message> {
    let mut r = Reader(payload.strip_prefix(MAGIC)?);
    let origin = r.str()?;
    let count = r.u16()? as usize;
    if count > MAX_HEADERS {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let k = r.str()?;
        let v = r.str()?;
        if k.is_empty() || k.contains(['\n', '\r', ':']) || v.contains(['\n', '\r']) {
            return None;
        }
        headers.push((k, v));
    }
    Some(Message {
        origin,
        headers,
        body: Bytes::copy_from_slice(r.0),
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u16(&mut self) -> Option<u16> {
        let (n, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_be_bytes(*n))
    }

    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(simdutf8::basic::from_utf8(s).ok()?.to_string())
    }
}

/// What one node asks of the others on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Close every session of `user` in `project` (the sender has closed its own).
    Disconnect {
        /// The node that asked.
        from: String,
        /// The user's project.
        project: String,
        /// The user.
        user: String,
    },
    /// Refuse these tokens from now on, and close `user`'s sessions when `before` is now (the
    /// sender has done both itself and written it to the revocations hash).
    Revoke {
        /// The node that asked.
        from: String,
        /// The tokens' project.
        project: String,
        /// The user whose tokens issued at or before `before` are refused.
        user: Option<String>,
        /// One token's id.
        jti: Option<String>,
        /// Unix seconds.
        before: u64,
        /// Whether the user's sessions are to be closed.
        close: bool,
    },
}

impl Control {
    /// The control message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A control message from Redis, or `None` if it is malformed.
    pub fn decode(payload: &[u8]) -> Option<Control> {
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_and_stay_apart() {
        let n = Names::new("rc");
        let t = Dest::Topic {
            project: "p:1".into(),
            topic: "a:b".into(),
        };
        let u = Dest::User {
            project: "p".into(),
            user: "alice".into(),
            queue: "q".into(),
        };
        assert_eq!(n.dest(n.channel(&t).as_bytes()), Some(t.clone()));
        assert_eq!(n.dest(n.channel(&u).as_bytes()), Some(u));
        assert_eq!(n.dest(n.control().as_bytes()), None);
        assert_eq!(Names::new("other").dest(n.channel(&t).as_bytes()), None);
        assert_eq!(n.dest(b"rc:x\0p\0t"), None);
    }

    #[test]
    fn messages_round_trip() {
        let headers = vec![("content-type".to_string(), "text/plain".to_string())];
        let wire = encode("node-1", &headers, b"\x00hello\xff");
        let m = decode(&wire).unwrap();
        assert_eq!(m.origin, "node-1");
        assert_eq!(m.headers, headers);
        assert_eq!(&m.body[..], b"\x00hello\xff");
        assert_eq!(decode(&encode("", &[], b"")).unwrap().body.len(), 0);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let wire = encode("n", &[("k".into(), "v".into())], b"body");
        for cut in 0..MAGIC.len() + 6 {
            assert_eq!(decode(&wire[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode(b"hello"), None);
        let bad_header = encode("n", &[("a\nb".into(), "v".into())], b"");
        assert_eq!(decode(&bad_header), None);
        let mut many = MAGIC.to_vec();
        many.extend_from_slice(&[0, 0, 0xff, 0xff]);
        assert_eq!(decode(&many), None);
    }

    #[test]
    fn positioned_messages_round_trip_and_refuse_junk() {
        let inner = encode("n", &[], b"hi");
        let wire = encode_positioned("abc123", 42, &inner);
        let (e, o, m) = decode_positioned(&wire).unwrap();
        assert_eq!((e.as_str(), o), ("abc123", 42));
        assert_eq!(&m.body[..], b"hi");
        assert_eq!(decode_positioned(&inner), None);
        assert_eq!(decode_positioned(b"RCP1abc:x\n"), None);
        assert_eq!(decode_positioned(b"RCP1abc:1"), None);
        assert_eq!(decode_positioned(b"RCP1:1\nRC1\0"), None);
    }

    #[test]
    fn sharded_names_keep_a_destination_in_one_slot_and_presence_in_another() {
        let n = Names::sharded("rc");
        let d = Dest::Topic {
            project: "p".into(),
            topic: "news".into(),
        };
        let key = d.key();
        let (ch, meta, stream) = (n.channel(&d), n.history_meta(&key), n.history_stream(&key));
        let tag = format!("p{}", partition(&key));
        assert_eq!(
            [hash_tag(&ch), hash_tag(&meta), hash_tag(&stream)],
            [tag.as_str(); 3]
        );
        assert_eq!(n.dest(ch.as_bytes()), Some(d.clone()));
        // The same channel under another partition, or unsharded, is not ours.
        let other = format!("rc:{{p{}}}:{key}", (partition(&key) + 1) % PARTITIONS);
        assert_eq!(n.dest(other.as_bytes()), None);
        assert_eq!(n.dest(Names::new("rc").channel(&d).as_bytes()), None);
        for global in [
            n.control(),
            n.nodes(),
            n.node("a"),
            n.sessions("a"),
            n.probe("a"),
            n.revoked(),
        ] {
            assert_eq!(hash_tag(&global), "rc", "{global}");
        }
        assert_eq!(n.publish_command(), "SPUBLISH");
        // One Redis: the names are what they always were.
        let one = Names::new("rc");
        assert_eq!(one.channel_of_key("k"), "rc:k");
        assert_eq!(one.control(), "rc:control");
        assert_eq!(one.publish_command(), "PUBLISH");
        assert_eq!(hash_tag("a{}b"), "a{}b");
        assert_eq!(hash_tag("x{y}z{w}"), "y");
    }

    #[test]
    fn control_messages() {
        let c = Control::Disconnect {
            from: "n1".into(),
            project: "p".into(),
            user: "u".into(),
        };
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Control::decode(b"{\"op\":\"reboot\"}"), None);
    }
}
