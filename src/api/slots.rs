//! The network API's connection slots: at most `max_connections` at once and
//! `max_connections_per_ip` from one address. Slots held by connections that never presented a
//! valid key are the cheap ones to take, so a newcomer at either cap evicts the oldest of
//! those instead of being refused: silent sockets cannot keep keyed backends or `/healthz` out.

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::{Arc, Mutex};

/// A connection's slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slot {
    /// The connection presented a valid key (or a console session): it is no longer evicted.
    pub fn trust(&self) {
        let mut t = self.slots.lock();
        if let Some(e) = t.conns.get_mut(&self.id) {
            e.trusted = true;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().conns.remove(&self.id);
    }
}

struct Entry {
    ip: IpAddr,
    /// A handle on the socket, to shut it down when evicted (its thread then sees the end).
    stream: Option<TcpStream>,
    trusted: bool,
}

#[derive(Default)]
struct Table {
    next: u64,
    conns: HashMap<u64, Entry>,
}

pub struct Slots {
    max: usize,
    per_ip: usize,
    table: Mutex<Table>,
}

/// Why a connection got no slot: the status and words of its answer.
pub type Refusal = (u16, &'static str);

impl Slots {
    /// `per_ip` 0 = no per-address cap.
    pub fn new(max: usize, per_ip: usize) -> Slots {
        Slots {
            max,
            per_ip: if per_ip == 0 { usize::MAX } else { per_ip },
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `ip`, evicting an untrusted one at a cap if it must.
    pub fn take(self: &Arc<Self>, ip: IpAddr, stream: Option<TcpStream>) -> Result<Slot, Refusal> {
        let mut t = self.lock();
        if t.conns.values().filter(|e| e.ip == ip).count() >= self.per_ip
            && !evict(&mut t, |e| e.ip == ip)
        {
            return Err((429, "too many API connections from this address"));
        }
        if t.conns.len() >= self.max && !evict(&mut t, |_| true) {
            return Err((503, "too many API connections: retry shortly"));
        }
        t.next += 1;
        let id = t.next;
        t.conns.insert(
            id,
            Entry {
                ip,
                stream,
                trusted: false,
            },
        );
        Ok(Slot {
            slots: self.clone(),
            id,
        })
    }
}

/// Shuts down and forgets the oldest untrusted connection that `which` picks; false if none.
fn evict(t: &mut Table, which: impl Fn(&Entry) -> bool) -> bool {
    let Some(id) = t
        .conns
        .iter()
        .filter(|(_, e)| !e.trusted && which(e))
        .map(|(&id, _)| id)
        .min()
    else {
        return false;
    };
    if let Some(s) = t.conns.remove(&id).and_then(|e| e.stream) {
        let _ = s.shutdown(Shutdown::Both);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_slots_are_evicted_at_the_caps() {
        let s = Arc::new(Slots::new(3, 2));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let a1 = s.take(a, None).unwrap();
        let a2 = s.take(a, None).unwrap();
        a1.trust();
        a2.trust();
        // a is at its cap with only trusted slots: refused.
        assert_eq!(s.take(a, None).err().unwrap().0, 429);
        let b1 = s.take(b, None).unwrap();
        // Full: b's untrusted slot makes room.
        let b2 = s.take(b, None).unwrap();
        assert_eq!(s.lock().conns.len(), 3);
        b2.trust();
        assert_eq!(s.take(b, None).err().unwrap().0, 503);
        drop(b1);
        drop(a1);
        assert!(s.take(b, None).is_ok());
    }
}
