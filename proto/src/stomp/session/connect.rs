//! A STOMP session's CONNECT: the version both sides speak, the token (a `token` header, a
//! `passcode` or `Authorization: Bearer`, or the upgrade's own) checked against the project's
//! keys, the heart-beats agreed, and CONNECTED or an ERROR frame saying why not.

use super::{AUTH_FAIL, Output, Session, Sink, State};
use crate::context::Context;
use crate::names::check as check_name;
use crate::stomp::frame::{Command, Frame};
use crate::ws::CloseError;

impl Session {
    pub(super) fn connect(&mut self, f: &Frame, ctx: &Context, out: &mut impl Sink) {
        self.version = match negotiate_version(f.get("accept-version")) {
            Some(v) => v,
            None => {
                let mut e = Frame::new(Command::Error)
                    .header("version", "1.0,1.1,1.2")
                    .header(
                        "message",
                        "supported protocol versions are 1.0, 1.1 and 1.2",
                    );
                e.body = b"supported protocol versions are 1.0, 1.1 and 1.2".to_vec();
                out.put(Output::Frame(e.encode()));
                out.put(Output::Close(
                    CloseError::PROTOCOL,
                    "unsupported STOMP version",
                ));
                self.state = State::Closed;
                return;
            }
        };
        if let Some(p) = f.get("projectId") {
            self.project = ctx.project(p);
        }
        if let Err(r) = check_name("projectId", &self.project) {
            return self.auth_fail(&r, out);
        }
        let token = f
            .get("token")
            .or_else(|| f.get("Authorization").and_then(bearer))
            .or_else(|| f.get("authorization").and_then(bearer))
            .or(self.upgrade_token.as_deref())
            .map(str::to_string);
        if ctx.auth.enabled {
            let Some(token) = token else {
                return self.auth_fail("no token: send a JWT in the token header", out);
            };
            match ctx.auth.verify(&self.project, &token) {
                Ok(v) => {
                    self.user = Some(v.user.into());
                    self.exp = u32::try_from(v.exp).unwrap_or(u32::MAX);
                    self.grants = v.grants.map(Box::new);
                }
                Err(e) => return self.auth_fail(&e.to_string(), out),
            }
        } else {
            // Without auth the login header names the user; it becomes a key and a header, so
            // it obeys the same rule as a token's user claim.
            let login = f.get("login").filter(|l| !l.is_empty());
            if let Some(l) = login
                && let Err(e) = check_name("login", l)
            {
                return self.auth_fail(&e, out);
            }
            self.user = login.map(Into::into);
        }
        self.upgrade_token = None;
        let (sx, sy) = (
            ctx.cfg.stomp.heartbeat_send_ms,
            ctx.cfg.stomp.heartbeat_receive_ms,
        );
        let (cx, cy) = parse_heartbeat(f.get("heart-beat"));
        self.hb_out = if sx == 0 || cy == 0 { 0 } else { sx.max(cy) };
        self.hb_in = if cx == 0 || sy == 0 { 0 } else { cx.max(sy) };
        let mut c = Frame::new(Command::Connected)
            .header("version", self.version)
            .header("heart-beat", format!("{sx},{sy}"))
            .header("server", concat!("ringcast/", env!("CARGO_PKG_VERSION")));
        if let Some(u) = &self.user {
            c = c.header("user-name", &**u);
        }
        out.put(Output::Frame(c.encode()));
        out.put(Output::Connected);
        self.state = State::Connected;
    }

    pub(super) fn auth_fail(&mut self, reason: &str, out: &mut impl Sink) {
        out.put(Output::Refused(format!(
            "STOMP session refused in project {}: {reason}",
            self.project
        )));
        let failed = "authentication failed";
        self.error_with(AUTH_FAIL, reason, None, CloseError::POLICY, failed, out);
    }
}

fn bearer(v: &str) -> Option<&str> {
    v.strip_prefix("Bearer ").map(str::trim)
}

/// The highest version both sides speak; a CONNECT without `accept-version` is STOMP 1.0.
pub(super) fn negotiate_version(accept: Option<&str>) -> Option<&'static str> {
    let Some(list) = accept else {
        return Some("1.0");
    };
    let offered: Vec<&str> = list.split(',').map(str::trim).collect();
    ["1.2", "1.1", "1.0"]
        .into_iter()
        .find(|v| offered.contains(v))
}

pub(super) fn parse_heartbeat(v: Option<&str>) -> (u32, u32) {
    let Some((a, b)) = v.and_then(|v| v.split_once(',')) else {
        return (0, 0);
    };
    (a.trim().parse().unwrap_or(0), b.trim().parse().unwrap_or(0))
}
