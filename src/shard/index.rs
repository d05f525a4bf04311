//! One shard's index of who listens to what: destination → the slab keys of its local
//! subscribers, with the edges (a destination's first and last subscriber here) reported to the
//! node's audience table and, in a cluster, to the relay.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::audience::Audience;
use crate::dest::Dest;
use crate::relay::Relay;

/// One shard's index: destination → the slab keys of its local subscribers.
#[derive(Default)]
pub struct Subscriptions {
    ids: HashMap<String, u32>,
    /// By id: the destination's key (to forget it in O(1)) and its members.
    members: Vec<(String, HashSet<u32>)>,
    free: Vec<u32>,
    /// In a cluster: told when a destination gains its first or loses its last subscriber
    /// here, so the node listens in Redis only to what it has an audience for.
    watch: Option<Arc<dyn Relay>>,
    /// This shard's id and the node's audience table, told of the same edges.
    audience: Option<(usize, Arc<Audience>)>,
    /// The key of the destination being looked up (no allocation per lookup).
    scratch: String,
}

/// A handle to one destination in a shard's index; connections keep these, not names.
pub type DestId = u32;

impl Subscriptions {
    pub fn watched(
        watch: Option<Arc<dyn Relay>>,
        audience: Option<(usize, Arc<Audience>)>,
    ) -> Subscriptions {
        Subscriptions {
            watch,
            audience,
            ..Default::default()
        }
    }

    /// Adds `conn` to `dest`; returns the destination's id (the same for every subscriber).
    pub fn subscribe(&mut self, dest: &Dest, conn: u32) -> DestId {
        dest.write_key(&mut self.scratch);
        let id = match self.ids.get(self.scratch.as_str()) {
            Some(&id) => id,
            None => {
                let key = self.scratch.clone();
                let id = match self.free.pop() {
                    Some(id) => id,
                    None => {
                        self.members.push(Default::default());
                        (self.members.len() - 1) as u32
                    }
                };
                if let Some(w) = &self.watch {
                    w.interest(&key, true);
                }
                if let Some((shard, a)) = &self.audience {
                    a.set(&key, *shard, true);
                }
                self.members[id as usize].0 = key.clone();
                self.ids.insert(key, id);
                id
            }
        };
        self.members[id as usize].1.insert(conn);
        id
    }

    /// Removes `conn` from destination `id`; the destination is forgotten with its last member.
    pub fn unsubscribe(&mut self, id: DestId, conn: u32) {
        let (key, set) = &mut self.members[id as usize];
        set.remove(&conn);
        if set.is_empty() {
            *set = HashSet::new();
            if let Some(w) = &self.watch {
                w.interest(key, false);
            }
            if let Some((shard, a)) = &self.audience {
                a.set(key, *shard, false);
            }
            self.ids.remove(std::mem::take(key).as_str());
            self.free.push(id);
        }
    }

    pub fn id_of(&mut self, dest: &Dest) -> Option<DestId> {
        dest.write_key(&mut self.scratch);
        self.ids.get(self.scratch.as_str()).copied()
    }

    /// Appends the subscribers of `dest` to `out`.
    pub fn members_of(&mut self, dest: &Dest, out: &mut Vec<u32>) {
        if let Some(id) = self.id_of(dest) {
            out.extend(self.members[id as usize].1.iter().copied());
        }
    }

    pub fn destinations(&self) -> usize {
        self.ids.len()
    }

    /// Up to `limit` destinations of `projects` (`None`: any) whose key contains `filter`
    /// and sorts after `after`, the smallest first, with their subscribers. A scan of the
    /// shard's destinations, keeping only `limit` at a time: a page costs the scan, never a
    /// sort of everything. The projects are filtered before the page is cut, so a page (and
    /// its cursor) never holds another project's names.
    pub fn page(
        &self,
        projects: Option<&[String]>,
        filter: &str,
        after: &str,
        limit: usize,
    ) -> Vec<(String, usize)> {
        let mut best: std::collections::BinaryHeap<(&str, usize)> = Default::default();
        let allowed = |key: &str| {
            projects.is_none_or(|ps| {
                let project = key.split('\0').nth(1).unwrap_or("");
                ps.iter().any(|p| p == project)
            })
        };
        for (key, members) in &self.members {
            if members.is_empty() || key.as_str() <= after || !key.contains(filter) || !allowed(key)
            {
                continue;
            }
            best.push((key, members.len()));
            if best.len() > limit {
                best.pop();
            }
        }
        let mut out: Vec<(String, usize)> =
            best.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        out.sort();
        out
    }

    /// The destination an id stands for.
    pub fn dest_of(&self, id: DestId) -> Option<Dest> {
        self.members
            .get(id as usize)
            .and_then(|(key, _)| Dest::from_key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(p: &str, t: &str) -> Dest {
        Dest::topic(p, t).unwrap()
    }

    #[test]
    fn projects_and_namespaces_are_separate() {
        let mut s = Subscriptions::default();
        let a = s.subscribe(&topic("p1", "news"), 1);
        s.subscribe(&topic("p2", "news"), 2);
        s.subscribe(
            &Dest::User {
                project: "p1".into(),
                user: "news".into(),
                queue: "news".into(),
            },
            3,
        );
        assert_eq!(s.subscribe(&topic("p1", "news"), 4), a);
        let mut out = Vec::new();
        s.members_of(&topic("p1", "news"), &mut out);
        out.sort();
        assert_eq!(out, [1, 4]);
        s.unsubscribe(a, 1);
        s.unsubscribe(a, 4);
        out.clear();
        s.members_of(&topic("p1", "news"), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.destinations(), 2);
        // The freed id is reused.
        assert_eq!(s.subscribe(&topic("p3", "x"), 5), a);
    }
}
