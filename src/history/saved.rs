//! The node's history as plain data, for `ringcast upgrade` (issue #31): the old process saves
//! it once publishes stop, the new one starts from it, so epochs and offsets go on and a
//! client that recovers after the upgrade is told `x-recovered: true`. Ages, not instants,
//! travel (each process has its own clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Entry, History, Stream};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    /// The node's epoch (what `x-epoch` says for its streams).
    pub epoch: String,
    pub streams: Vec<SavedStream>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedStream {
    /// The destination's index key.
    pub key: String,
    pub epoch: String,
    pub last: u64,
    pub complete: bool,
    /// Oldest first.
    pub entries: Vec<SavedEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedEntry {
    pub offset: u64,
    /// Milliseconds since it was kept.
    pub age_ms: u64,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl History {
    /// Everything kept, now.
    pub fn save(&self) -> Saved {
        let now = self.now_ms();
        let streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        Saved {
            epoch: self.epoch.to_string(),
            streams: streams
                .iter()
                .map(|(key, s)| SavedStream {
                    key: key.clone(),
                    epoch: s.epoch.to_string(),
                    last: s.last,
                    complete: s.complete,
                    entries: s
                        .entries
                        .iter()
                        .map(|e| SavedEntry {
                            offset: e.offset,
                            age_ms: now.saturating_sub(e.at_ms),
                            body: e.body.to_vec(),
                            headers: e.headers.as_deref().cloned().unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// This (empty) store, going on from `saved`: its epoch, streams and offsets. Its clock
    /// starts as far ahead as the oldest entry is old, so ages (and `ttl_ms`) carry over.
    pub fn restored(mut self, saved: Saved) -> History {
        let shift = saved
            .streams
            .iter()
            .flat_map(|s| s.entries.iter().map(|e| e.age_ms))
            .max()
            .unwrap_or(0);
        let started = Instant::now();
        self.clock = Arc::new(move || started.elapsed().as_millis() as u64 + shift);
        self.epoch = saved.epoch.into();
        let mut streams = HashMap::with_capacity(saved.streams.len());
        let mut kept = 0;
        for s in saved.streams {
            let epoch: Arc<str> = if *s.epoch == *self.epoch {
                self.epoch.clone()
            } else {
                s.epoch.into()
            };
            let mut stream = Stream::new(epoch, s.complete);
            stream.last = s.last;
            for e in s.entries {
                let body = stream.store(&e.body);
                let mut entry = Entry::new(e.offset, body, e.headers);
                entry.at_ms = shift - e.age_ms.min(shift);
                stream.entries.push_back(entry);
                kept += 1;
            }
            streams.insert(s.key, stream);
        }
        self.streams = Mutex::new(streams);
        self.count_kept(kept, 0);
        self
    }
}
