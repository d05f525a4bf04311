//! Time in a shard: the tick that advances the wheel, and what each deadline does when it comes
//! due (handshake and CONNECT deadlines, heart-beats, pings, unanswered closes), with the stall
//! grace that keeps a shard that itself fell behind from blaming its clients.

use std::sync::atomic::Ordering::Relaxed;

use super::timer::Kind;
use super::{Core, Now, Op, STALL_TICKS, TICK, ticks};
use crate::endpoint::Wrapping;
use crate::shard::conn::Liveness;
use crate::ws::CloseError;

impl Core {
    /// The periodic tick: the wheel catches up with `now` and every deadline due runs.
    pub fn tick(&mut self, now: Now) {
        self.st().last_turn_ms.store(now.unix_ms, Relaxed);
        if self.accept_paused && self.shutdown_at.is_none() {
            self.accept_paused = false;
            self.ops.push(Op::Accept);
        }
        // The wheel follows the clock, not the count of timeout events: on a saturated host a
        // shard's 100 ms timeout completes late, and deadlines (heart-beats above all) must not
        // stretch with it.
        let target = now.ms / TICK.as_millis() as u64;
        // A shard that fell behind by more than a second was itself stalled: input may still
        // be waiting for it, so nobody is closed for silence in this pass (beats still go out).
        let stalled = target.saturating_sub(self.wheel.now()) > STALL_TICKS;
        self.expire_tokens(now.unix_ms / 1000);
        self.backlog.tick(now.ms);
        self.sockjs_contested();
        self.drain_step();
        let mut due = Vec::new();
        while self.wheel.now() < target {
            self.wheel.advance(|e| due.push(e));
        }
        for e in due {
            let Some(c) = self.conns.get(e.key as usize) else {
                continue;
            };
            if c.epoch != e.epoch || c.is_shut() {
                continue;
            }
            match e.kind {
                Kind::Handshake if stalled && c.session.in_handshake() => {
                    self.wheel.schedule(e.key, e.epoch, e.kind, STALL_TICKS);
                }
                Kind::Connect if stalled => {
                    self.wheel.schedule(e.key, e.epoch, e.kind, STALL_TICKS);
                }
                Kind::Handshake if c.session.in_handshake() => {
                    self.st().handshake_timeouts.fetch_add(1, Relaxed);
                    self.close_session(e.key, 0, "the upgrade request did not complete in time");
                }
                Kind::Connect => self.connect_due(e.key),
                Kind::Heartbeat => self.heartbeat_due(e.key, e.epoch, stalled),
                Kind::Ping if c.session.is_open() => self.ping_due(e.key, e.epoch, stalled),
                Kind::SockjsExpire => self.sockjs_expire(e.key),
                Kind::SockjsBeat if c.session.wrapping() == Wrapping::SockjsHttp => {
                    self.sockjs_beat(e.key);
                    let t = ticks(self.ctx.cfg.sockjs.heartbeat_ms);
                    self.wheel.schedule(e.key, e.epoch, Kind::SockjsBeat, t);
                }
                Kind::SockjsBeat if c.session.is_open() => {
                    let beat = bytes::Bytes::from_static(crate::endpoint::SOCKJS_BEAT);
                    self.send(e.key, beat, false);
                    let t = ticks(self.ctx.cfg.sockjs.heartbeat_ms);
                    self.wheel.schedule(e.key, e.epoch, Kind::SockjsBeat, t);
                }
                Kind::Closing => {
                    // The peer never answered our close: drop the socket.
                    self.shut(e.key);
                    self.reap(e.key);
                }
                _ => {}
            }
        }
    }

    fn connect_due(&mut self, key: u32) {
        let mut out = std::mem::take(&mut self.out);
        let ms = self.ctx.cfg.limits.connect_timeout_ms;
        if self.conns[key as usize]
            .session
            .connect_timeout(ms, &mut out)
        {
            self.st().connect_timeouts.fetch_add(1, Relaxed);
        }
        self.apply(key, &mut out);
        self.out = out;
    }

    fn heartbeat_due(&mut self, key: u32, epoch: u32, stalled: bool) {
        let mut out = std::mem::take(&mut self.out);
        let tick_ms = TICK.as_millis() as u64;
        let now = self.wheel.now();
        let next = self.conns[key as usize]
            .session
            .on_heartbeat(now, tick_ms, stalled, &mut out);
        self.apply(key, &mut out);
        self.out = out;
        if let Some(t) = next {
            self.wheel.schedule(key, epoch, Kind::Heartbeat, t);
        }
    }

    fn ping_due(&mut self, key: u32, epoch: u32, stalled: bool) {
        let interval = ticks(self.ctx.cfg.limits.ping_interval_ms);
        let liveness = match self.conns[key as usize].ping_due() {
            Liveness::Dead if stalled => Liveness::Ping,
            l => l,
        };
        match liveness {
            Liveness::Alive => self.wheel.schedule(key, epoch, Kind::Ping, interval),
            Liveness::Ping => {
                let ping = crate::ws::frame::encode(crate::ws::frame::Opcode::Ping, b"");
                self.send(key, ping, false);
                self.wheel.schedule(key, epoch, Kind::Ping, interval);
            }
            Liveness::Dead => {
                self.st().ping_timeouts.fetch_add(1, Relaxed);
                self.close_session(key, CloseError::GOING_AWAY, "ping timeout");
            }
        }
    }
}

impl Core {
    /// Logs a refusal (an authentication failure, a 401/403), at most once a second per shard,
    /// with the peer's address when the shard knows it.
    pub(super) fn log_refusal(&mut self, key: u32, why: &str) {
        let now = self.wheel.now();
        if now < self.refusals_quiet_until {
            self.refusals_suppressed += 1;
            return;
        }
        self.refusals_quiet_until = now + 10;
        let peer = self.peers.get(&key).map(|ip| ip.to_string());
        let more = std::mem::take(&mut self.refusals_suppressed);
        tracing::warn!(
            shard = self.id,
            peer = peer.as_deref().unwrap_or("?"),
            suppressed = more,
            "{why}"
        );
    }
}
