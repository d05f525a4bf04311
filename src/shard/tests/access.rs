//! Topic permissions and token expiry in one shard, on virtual time: a `claim` project lets a
//! session read what its token lists and nothing else; a `proxy` project parks the SUBSCRIBE
//! until the backend's answer comes back; an expired token closes its session unless a newer
//! one came through `/app/refresh` (STOMP) or `{"refresh": …}` (raw).

use super::*;
use crate::access::{Act, Policy};
use crate::config::Project;
use crate::shard::inbox::Answer;

const SECRET: &str = "access-test-secret-0123456789abcdef";
/// The virtual clock's Unix seconds at the start of a test.
const T0: u64 = UNIX_MS / 1000;

fn ctx(edit: impl FnOnce(&mut Project)) -> Arc<Context> {
    config(|c| {
        c.auth.enabled = true;
        let mut p = Project {
            jwt_secret: Some(SECRET.into()),
            ..Default::default()
        };
        edit(&mut p);
        c.projects.insert("p".into(), p);
    })
}

/// A token for `user` expiring at virtual second `T0 + exp_in` (valid for the real clock too,
/// which is behind the virtual one).
fn token(ctx: &Context, user: &str, exp_in: u64, channels: Option<&[&str]>) -> String {
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let channels: Option<Vec<String>> = channels.map(|c| c.iter().map(|s| s.to_string()).collect());
    ctx.auth
        .mint_granting("p", user, T0 + exp_in - real, channels.as_deref())
        .unwrap()
}

impl Net {
    fn stomp_with(&mut self, token: &str) -> u32 {
        let k = self.connect("127.0.0.1");
        self.client_sends(k, STOMP.as_bytes());
        let connect = format!(
            "CONNECT\naccept-version:1.2\nprojectId:p\ntoken:{token}\nheart-beat:0,0\n\n\0"
        );
        self.client_sends_frame(k, Opcode::Text, connect.as_bytes());
        assert!(
            self.texts(k)[0].starts_with("CONNECTED\n"),
            "{:?}",
            self.texts(k)
        );
        k
    }

    fn stomp_frame(&mut self, k: u32, f: &str) {
        self.client_sends_frame(k, Opcode::Text, f.as_bytes());
    }

    fn last_text(&self, k: u32) -> String {
        self.texts(k).last().cloned().unwrap_or_default()
    }

    fn answer(&mut self, allowed: bool, reason: &str) {
        let q = self.asked.remove(0);
        self.core.command(Command::Answer(Answer {
            key: q.key,
            epoch: q.epoch,
            act: q.act,
            topic: q.topic,
            allowed,
            reason: reason.into(),
        }));
        self.pump();
    }
}

#[test]
fn claim_grants_exact_names_and_patterns_only() {
    let ctx = ctx(|p| p.subscribe = Policy::Claim);
    let mut net = Net::new(ctx.clone());
    let t = token(&ctx, "alice", 3600, Some(&["news.*", "orders.7"]));
    let k = net.stomp_with(&t);
    net.stomp_frame(
        k,
        "SUBSCRIBE\nid:0\ndestination:/topic/news.eu\nreceipt:a\n\n\0",
    );
    assert!(net.last_text(k).starts_with("RECEIPT\nreceipt-id:a\n"));
    // User queues are the token's own, whatever the policy.
    net.stomp_frame(
        k,
        "SUBSCRIBE\nid:1\ndestination:/user/queue/x\nreceipt:b\n\n\0",
    );
    assert!(net.last_text(k).starts_with("RECEIPT\nreceipt-id:b\n"));
    assert_eq!(net.publish_to("p", "news.eu", "hi"), 1);
    net.stomp_frame(
        k,
        "SUBSCRIBE\nid:2\ndestination:/topic/orders.8\nreceipt:c\n\n\0",
    );
    let err = net.last_text(k);
    assert!(err.starts_with("ERROR\n"), "{err}");
    assert!(
        err.contains("message:forbidden\n") && err.contains("receipt-id:c\n"),
        "{err}"
    );
    assert!(err.contains("subscribe orders.8: the token's channels claim does not grant it"));
    assert_eq!(net.close_of(k).map(|c| c.0), Some(1008));
}

#[test]
fn proxy_parks_the_subscribe_until_the_backend_answers() {
    let ctx = ctx(|p| {
        p.subscribe = Policy::Proxy;
        p.subscribe_proxy = Some("http://127.0.0.1:1/never-called".into());
    });
    let mut net = Net::new(ctx.clone());
    let k = net.stomp_with(&token(&ctx, "bob", 3600, None));
    net.stomp_frame(k, "SUBSCRIBE\nid:0\ndestination:/topic/a\nreceipt:r\n\n\0");
    assert_eq!(net.texts(k).len(), 1, "no receipt before the answer");
    assert_eq!(net.asked.len(), 1);
    let q = &net.asked[0];
    assert_eq!(
        (q.project.as_str(), q.user.as_str(), q.topic.as_str(), q.act),
        ("p", "bob", "a", Act::Subscribe)
    );
    assert_eq!(net.core.backend_for(q), "http://127.0.0.1:1/never-called");
    assert_eq!(net.publish_to("p", "a", "too early"), 0);
    net.answer(true, "");
    assert!(net.last_text(k).starts_with("RECEIPT\nreceipt-id:r\n"));
    assert_eq!(net.publish_to("p", "a", "now"), 1);
    net.stomp_frame(k, "SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0");
    net.answer(false, "not your order");
    let err = net.last_text(k);
    assert!(
        err.contains("message:forbidden\n") && err.ends_with("subscribe b: not your order\0"),
        "{err}"
    );
}

#[test]
fn an_expired_token_closes_its_session_unless_refreshed() {
    let ctx = ctx(|_| {});
    let mut net = Net::new(ctx.clone());
    let stays = net.stomp_with(&token(&ctx, "carol", 30, None));
    let goes = net.stomp_with(&token(&ctx, "dave", 30, None));
    net.advance(20_000, false);
    let newer = token(&ctx, "carol", 90, None);
    net.stomp_frame(
        stays,
        &format!("SEND\ndestination:/app/refresh\ntoken:{newer}\nreceipt:x\n\n\0"),
    );
    assert!(net.last_text(stays).starts_with("RECEIPT\nreceipt-id:x\n"));
    // Another user's token is no refresh.
    let other = token(&ctx, "eve", 90, None);
    let k = net.stomp_with(&token(&ctx, "frank", 300, None));
    net.stomp_frame(
        k,
        &format!("SEND\ndestination:/app/refresh\ntoken:{other}\n\n\0"),
    );
    assert!(
        net.last_text(k)
            .contains("refresh refused: the new token names another user")
    );
    net.advance(10_500, false);
    let err = net.last_text(goes);
    assert!(
        err.starts_with("ERROR\n") && err.contains("message:token_expired\n"),
        "{err}"
    );
    assert_eq!(net.close_of(goes).map(|c| c.0), Some(1008));
    assert!(net.close_of(stays).is_none());
    net.advance(60_000, false);
    assert!(net.last_text(stays).contains("message:token_expired\n"));
    assert_eq!(net.counter(|s| &s.token_expired), 2);
}

#[test]
fn raw_sessions_are_checked_at_the_upgrade_and_expire_with_4001() {
    let ctx = ctx(|p| p.subscribe = Policy::Claim);
    let mut net = Net::new(ctx.clone());
    let t = token(&ctx, "gina", 30, Some(&["news"]));
    let upgrade = |topic: &str, t: &str| {
        RAW.replace(
            "/ws?topic=t",
            &format!("/ws?project=p&topic={topic}&token={t}"),
        )
    };
    let refused = net.connect("127.0.0.1");
    net.client_sends(refused, upgrade("secret", &t).as_bytes());
    let (head, _) = net.received(refused);
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(head.contains("forbidden: subscribe secret"), "{head}");
    let k = net.connect("127.0.0.1");
    net.client_sends(k, upgrade("news", &t).as_bytes());
    assert!(net.received(k).0.starts_with("HTTP/1.1 101"));
    let newer = token(&ctx, "gina", 60, Some(&["news"]));
    net.client_sends_frame(
        k,
        Opcode::Text,
        format!(r#"{{"refresh":"{newer}"}}"#).as_bytes(),
    );
    assert!(
        net.last_text(k).starts_with(r#"{"refreshed":"#),
        "{:?}",
        net.texts(k)
    );
    net.advance(40_000, false);
    assert!(net.close_of(k).is_none());
    net.advance(21_000, false);
    assert_eq!(net.close_of(k), Some((4001, "token expired".into())));
}
