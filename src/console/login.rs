//! The console's logins: a session per successful login with an admin API key, named by a
//! random id that travels only in an `HttpOnly`, `SameSite=Strict` cookie, and a second random
//! token the page must echo in `X-CSRF-Token` on every request that changes something. Pure
//! bookkeeping over a clock passed in, so it is tested without a browser.

use std::collections::HashMap;

use ring::rand::{SecureRandom, SystemRandom};

/// The cookie that names a console session.
pub const COOKIE: &str = "ringcast_console";
/// A session ends this long after its last request.
pub const IDLE_MS: u64 = 8 * 3600 * 1000;
/// Sessions kept at once; beyond it the least recently used goes.
const MAX: usize = 1000;

struct Login {
    csrf: String,
    last_ms: u64,
    grant: Grant,
}

/// What the key that logged in may do in the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The projects it may touch (`None`: all).
    pub projects: Option<Vec<String>>,
    /// It has the `publish` scope besides `admin`: the console may publish with it.
    pub publish: bool,
}

/// A live session, as a request sees it.
pub struct Seen {
    pub csrf: String,
    pub grant: Grant,
}

#[derive(Default)]
pub struct Logins {
    by_id: HashMap<String, Login>,
}

/// 32 random bytes as hex.
fn token() -> String {
    let mut b = [0u8; 32];
    // The system's generator does not fail on Linux; a zero token would only ever match
    // another zero token, and none is ever handed out twice in practice.
    let _ = SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: Option<&'a str>, name: &str) -> Option<&'a str> {
    header?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

impl Logins {
    /// A new session: its id (for the cookie) and its CSRF token (for the page).
    pub fn open(&mut self, now_ms: u64, grant: Grant) -> (String, String) {
        self.by_id
            .retain(|_, l| now_ms.saturating_sub(l.last_ms) < IDLE_MS);
        if self.by_id.len() >= MAX
            && let Some(oldest) = self
                .by_id
                .iter()
                .min_by_key(|(_, l)| l.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.by_id.remove(&oldest);
        }
        let (id, csrf) = (token(), token());
        self.by_id.insert(
            id.clone(),
            Login {
                csrf: csrf.clone(),
                last_ms: now_ms,
                grant,
            },
        );
        (id, csrf)
    }

    /// The live session `id` (found in constant time per entry), kept alive by the call.
    pub fn check(&mut self, id: &str, now_ms: u64) -> Option<Seen> {
        let found = self.by_id.keys().find(|k| same(k, id))?.clone();
        let l = self.by_id.get_mut(&found)?;
        if now_ms.saturating_sub(l.last_ms) >= IDLE_MS {
            self.by_id.remove(&found);
            return None;
        }
        l.last_ms = now_ms;
        Some(Seen {
            csrf: l.csrf.clone(),
            grant: l.grant.clone(),
        })
    }

    /// Whether `presented` is session `id`'s CSRF token.
    pub fn csrf_ok(&mut self, id: &str, presented: Option<&str>, now_ms: u64) -> bool {
        match (self.check(id, now_ms), presented) {
            (Some(want), Some(got)) => same(&want.csrf, got),
            _ => false,
        }
    }

    pub fn close(&mut self, id: &str) {
        self.by_id.retain(|k, _| !same(k, id));
    }
}

/// Failed logins allowed per address in `THROTTLE_MS` before the next are refused unread.
const MAX_FAILURES: u32 = 10;
const THROTTLE_MS: u64 = 60_000;
/// Addresses remembered at once. Past it, the addresses not in the table share one bucket of
/// `MAX_FAILURES`: a flood from many addresses throttles newcomers instead of freeing them.
const MAX_ADDRESSES: usize = 10_000;

/// Failed logins per source address (IPv6 by its /64, which one host typically holds whole):
/// keys are long, but guessing should still be slow.
#[derive(Default)]
pub struct Throttle {
    by_ip: HashMap<std::net::IpAddr, (u32, u64)>,
    /// The shared bucket of addresses that found the table full.
    overflow: (u32, u64),
}

/// The address a failure is counted under.
fn group(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// A bucket's failures still inside the window at `now_ms`.
fn live((n, since): (u32, u64), now_ms: u64) -> u32 {
    if now_ms.saturating_sub(since) < THROTTLE_MS {
        n
    } else {
        0
    }
}

impl Throttle {
    /// Whether `ip` may try now.
    pub fn allows(&mut self, ip: std::net::IpAddr, now_ms: u64) -> bool {
        let ip = group(ip);
        match self.by_ip.get(&ip).copied() {
            Some(b) if live(b, now_ms) > 0 => b.0 < MAX_FAILURES,
            Some(_) => {
                self.by_ip.remove(&ip);
                true
            }
            None if self.full(now_ms) => live(self.overflow, now_ms) < MAX_FAILURES,
            None => true,
        }
    }

    /// `ip` failed to log in.
    pub fn failed(&mut self, ip: std::net::IpAddr, now_ms: u64) {
        let ip = group(ip);
        let bucket = if self.by_ip.contains_key(&ip) || !self.full(now_ms) {
            self.by_ip.entry(ip).or_insert((0, now_ms))
        } else {
            &mut self.overflow
        };
        if live(*bucket, now_ms) == 0 {
            *bucket = (0, now_ms);
        }
        bucket.0 += 1;
    }

    /// Whether the table is full of addresses that failed within the window.
    fn full(&mut self, now_ms: u64) -> bool {
        if self.by_ip.len() < MAX_ADDRESSES {
            return false;
        }
        self.by_ip.retain(|_, b| live(*b, now_ms) > 0);
        self.by_ip.len() >= MAX_ADDRESSES
    }
}

/// Logs a refused login at most once a second; returns the lines held back meanwhile, for
/// the next one that is written.
#[derive(Default)]
pub struct LogGate {
    quiet_until_ms: u64,
    held: u64,
}

impl LogGate {
    /// `Some(held back since the last line)` if a line may be written now.
    pub fn open(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms < self.quiet_until_ms {
            self.held += 1;
            return None;
        }
        self.quiet_until_ms = now_ms + 1000;
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_while_used_and_needs_its_own_csrf_token() {
        let mut l = Logins::default();
        let (id, csrf) = l.open(0, Grant::default());
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(l.check(&id, 1000).map(|s| s.csrf), Some(csrf.clone()));
        assert!(l.csrf_ok(&id, Some(&csrf), 2000));
        assert!(!l.csrf_ok(&id, Some("forged"), 2000));
        assert!(!l.csrf_ok(&id, None, 2000));
        let limited = Grant {
            projects: Some(vec!["p".into()]),
            publish: false,
        };
        let (other, other_csrf) = l.open(2000, limited.clone());
        assert_eq!(l.check(&other, 2000).unwrap().grant, limited);
        assert!(
            !l.csrf_ok(&id, Some(&other_csrf), 2000),
            "tokens are per session"
        );
        assert!(l.check("nope", 2000).is_none());
        // Idle past the limit: gone.
        assert!(l.check(&id, 2000 + IDLE_MS).is_none());
        l.close(&other);
        assert!(l.check(&other, 2001).is_none());
    }

    #[test]
    fn failed_logins_are_throttled_per_address_for_a_minute() {
        let mut t = Throttle::default();
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert!(t.allows(a, 0));
            t.failed(a, 0);
        }
        assert!(!t.allows(a, 1000));
        assert!(t.allows(b, 1000), "another address is not affected");
        assert!(t.allows(a, THROTTLE_MS), "a minute later it may try again");
    }

    #[test]
    fn a_full_table_throttles_newcomers_together() {
        let mut t = Throttle::default();
        for i in 0..MAX_ADDRESSES as u32 {
            let ip = std::net::IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            t.failed(ip, 0);
        }
        let fresh: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(t.allows(fresh, 1));
            t.failed(fresh, 1);
        }
        assert!(!t.allows(fresh, 2), "the overflow bucket is spent");
        assert!(!t.allows("192.0.2.2".parse().unwrap(), 2));
        assert!(
            t.allows(fresh, THROTTLE_MS + 1),
            "the table empties after a minute"
        );
    }

    #[test]
    fn ipv6_is_throttled_per_64() {
        let mut t = Throttle::default();
        for i in 0..MAX_FAILURES {
            t.failed(format!("2001:db8::{i:x}").parse().unwrap(), 0);
        }
        assert!(!t.allows("2001:db8::ffff:1".parse().unwrap(), 1));
        assert!(t.allows("2001:db8:0:1::1".parse().unwrap(), 1));
    }

    #[test]
    fn the_refusal_log_is_rate_limited() {
        let mut g = LogGate::default();
        assert_eq!(g.open(0), Some(0));
        assert_eq!(g.open(10), None);
        assert_eq!(g.open(20), None);
        assert_eq!(g.open(1000), Some(2));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let h = Some("a=1; ringcast_console=abc; b=2");
        assert_eq!(cookie(h, COOKIE), Some("abc"));
        assert_eq!(cookie(Some("ringcast_consolex=1"), COOKIE), None);
        assert_eq!(cookie(None, COOKIE), None);
    }
}
