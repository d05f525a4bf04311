//! Revoked tokens (`POST /revoke`): per (project, user), the moment at or before which its
//! tokens were issued (`iat`) and are refused; and single token ids (`jti`). Each entry is
//! forgotten once every token it could refuse has expired (`[auth] revoke_ttl_s` after the
//! revocation), so memory stays one entry per revoked user or id. Shared by every shard and
//! read on each token check: without any entry the check is one atomic load (`is_empty`,
//! which `Auth::verify` asks first).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

#[derive(Default)]
struct Entries {
    /// (project, user) → (tokens issued at or before this are refused, forgotten at).
    users: HashMap<(String, String), (u64, u64)>,
    /// (project, jti) → forgotten at.
    ids: HashMap<(String, String), u64>,
}

/// The node's revocations.
#[derive(Default)]
pub struct Revoked {
    entries: RwLock<Entries>,
    len: AtomicUsize,
    /// How long an entry is kept (`[auth] revoke_ttl_s`; 0 until a configuration sets it).
    ttl_s: AtomicU64,
}

impl Revoked {
    /// Keeps entries made from now on for `ttl_s` (the longest token lifetime accepted).
    pub fn set_ttl(&self, ttl_s: u64) {
        self.ttl_s.store(ttl_s, Relaxed);
    }

    /// Refuses `user`'s tokens issued at or before `before`, for as long as such a token can
    /// live; and `jti`, if given, the same way from `now`.
    pub fn revoke(
        &self,
        project: &str,
        user: Option<&str>,
        jti: Option<&str>,
        before: u64,
        now: u64,
    ) {
        let ttl = self.ttl_s.load(Relaxed);
        if let Some(u) = user {
            self.revoke_user(project, u, before, before.saturating_add(ttl), now);
        }
        if let Some(j) = jti {
            self.revoke_id(project, j, now.saturating_add(ttl), now);
        }
    }

    /// Refuses `user`'s tokens of `project` issued at or before `before` until `until`
    /// (Unix seconds). A later revocation of the same user moves both forward.
    pub fn revoke_user(&self, project: &str, user: &str, before: u64, until: u64, now: u64) {
        let mut e = self.write(now);
        let slot = e
            .users
            .entry((project.to_string(), user.to_string()))
            .or_insert((before, until));
        *slot = (slot.0.max(before), slot.1.max(until));
        self.count(&e);
    }

    /// Refuses the token `jti` of `project` until `until`.
    pub fn revoke_id(&self, project: &str, jti: &str, until: u64, now: u64) {
        let mut e = self.write(now);
        let slot = e
            .ids
            .entry((project.to_string(), jti.to_string()))
            .or_insert(until);
        *slot = (*slot).max(until);
        self.count(&e);
    }

    /// Whether a token of `project` for `user`, issued at `iat` (none: refused if the user
    /// has any revocation, since its age is unknown) with id `jti`, is revoked at `now`.
    pub fn refuses(
        &self,
        project: &str,
        user: &str,
        iat: Option<u64>,
        jti: Option<&str>,
        now: u64,
    ) -> bool {
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let key = |s: &str| (project.to_string(), s.to_string());
        let by_user = e
            .users
            .get(&key(user))
            .is_some_and(|&(before, until)| now < until && iat.is_none_or(|t| t <= before));
        let by_id = jti.is_some_and(|j| e.ids.get(&key(j)).is_some_and(|&until| now < until));
        by_user || by_id
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// No revocation is in force.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries for writing, the expired ones gone first.
    fn write(&self, now: u64) -> std::sync::RwLockWriteGuard<'_, Entries> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.users.retain(|_, &mut (_, until)| now < until);
        e.ids.retain(|_, &mut until| now < until);
        e
    }

    fn count(&self, e: &Entries) {
        self.len.store(e.users.len() + e.ids.len(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_tokens_up_to_the_moment_are_refused_until_they_would_have_expired() {
        let r = Revoked::default();
        assert!(!r.refuses("p", "alice", Some(100), None, 150));
        r.revoke_user("p", "alice", 200, 1000, 200);
        assert!(r.refuses("p", "alice", Some(100), None, 250));
        assert!(
            r.refuses("p", "alice", Some(200), None, 250),
            "issued at the moment"
        );
        assert!(
            !r.refuses("p", "alice", Some(201), None, 250),
            "issued after it"
        );
        assert!(
            r.refuses("p", "alice", None, None, 250),
            "no iat: unknown age"
        );
        assert!(!r.refuses("p", "bob", Some(100), None, 250));
        assert!(
            !r.refuses("q", "alice", Some(100), None, 250),
            "another project"
        );
        assert!(
            !r.refuses("p", "alice", Some(100), None, 1000),
            "every such token expired"
        );
        r.revoke_id("p", "t-1", 2000, 1001);
        assert_eq!(r.len(), 1, "the expired user entry went at the next write");
        assert!(r.refuses("p", "carol", Some(5000), Some("t-1"), 1500));
        assert!(!r.refuses("p", "carol", Some(5000), Some("t-2"), 1500));
    }
}
