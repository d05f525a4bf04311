//! Who may read and write which topics of a project, beyond holding a token for it:
//! everyone (`any`), nobody (`none`), the topics the token lists (`claim`: exact names and
//! `*` patterns), or whatever the project's backend answers (`proxy`, asked off the shards).
//! User queues are not topics: a session only ever reads its own user's.

use serde::{Deserialize, Serialize};

/// A project's rule for subscribing to, or publishing on, its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// No topic at all.
    None,
    /// Every topic of the project.
    #[default]
    Any,
    /// The topics the token's channels claim lists.
    Claim,
    /// What the project's backend answers, per (user, topic).
    Proxy,
}

/// What a session wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// SUBSCRIBE (or a raw upgrade's `topic`).
    Subscribe,
    /// SEND.
    Publish,
}

impl Act {
    /// `subscribe` / `publish`, as the backend and error messages see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Subscribe => "subscribe",
            Act::Publish => "publish",
        }
    }
}

/// The outcome of checking one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, and why (it reaches the client).
    Deny(String),
    /// The backend must be asked.
    Ask,
}

/// The topic patterns a token grants (its channels claim).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants(Box<[Box<str>]>);

impl Grants {
    /// Grants from a claim's strings.
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Grants {
        Grants(patterns.into_iter().map(Into::into).collect())
    }

    /// The patterns, as the claim listed them.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| &**p)
    }

    /// Whether some pattern covers `topic`.
    pub fn covers(&self, topic: &str) -> bool {
        self.0.iter().any(|p| matches(p, topic))
    }
}

/// Decides `act` on `topic` under `policy`, with the token's `grants` (for `claim`).
pub fn decide(policy: Policy, act: Act, grants: Option<&Grants>, topic: &str) -> Decision {
    match policy {
        Policy::Any => Decision::Allow,
        Policy::None => Decision::Deny(format!(
            "this project does not let clients {}",
            act.as_str()
        )),
        Policy::Claim if grants.is_some_and(|g| g.covers(topic)) => Decision::Allow,
        Policy::Claim => Decision::Deny("the token's channels claim does not grant it".into()),
        Policy::Proxy => Decision::Ask,
    }
}

/// Whether `topic` fits `pattern`: `*` stands for any run of characters (none included), every
/// other character for itself. `news.*` covers `news.eu` and `news.eu.fr`; `*` covers all.
pub fn matches(pattern: &str, topic: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), topic.as_bytes());
    let Some(star) = p.iter().position(|&b| b == b'*') else {
        return p == t;
    };
    // The part before the first star is a prefix; the part after the last, a suffix; what lies
    // between is matched greedily left to right, which is exact for `*`-only globs.
    let last = p.iter().rposition(|&b| b == b'*').unwrap_or(star);
    let (head, tail) = (&p[..star], &p[last + 1..]);
    if t.len() < head.len() + tail.len() || !t.starts_with(head) || !t.ends_with(tail) {
        return false;
    }
    let mut rest = &t[head.len()..t.len() - tail.len()];
    let middle = if last > star {
        &p[star + 1..last]
    } else {
        &[][..]
    };
    for part in middle.split(|&b| b == b'*').filter(|s| !s.is_empty()) {
        match rest.windows(part.len()).position(|w| w == part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, t, ok) in [
            ("orders.123", "orders.123", true),
            ("orders.123", "orders.1234", false),
            ("news.*", "news.eu", true),
            ("news.*", "news.", true),
            ("news.*", "news", false),
            ("news.*", "newsX", false),
            ("*", "anything", true),
            ("*.eu", "news.eu", true),
            ("*.eu", "news.us", false),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("a*b*c", "abc", true),
            ("a**", "a", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(matches(p, t), ok, "{p} vs {t}");
        }
    }

    #[test]
    fn decisions() {
        let g = Grants::new(["orders.7".to_string(), "news.*".to_string()]);
        let claim = |t| decide(Policy::Claim, Act::Subscribe, Some(&g), t);
        assert_eq!(claim("orders.7"), Decision::Allow);
        assert_eq!(claim("news.eu"), Decision::Allow);
        assert!(matches!(claim("orders.8"), Decision::Deny(_)));
        assert!(matches!(
            decide(Policy::Claim, Act::Subscribe, None, "x"),
            Decision::Deny(_)
        ));
        assert_eq!(
            decide(Policy::Proxy, Act::Publish, None, "x"),
            Decision::Ask
        );
        assert!(matches!(
            decide(Policy::None, Act::Publish, None, "x"),
            Decision::Deny(r) if r.contains("publish")
        ));
    }
}
