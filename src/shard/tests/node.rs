//! A node of several shards on virtual time: each shard a `Net`, with an in-memory hub between
//! them that carries what the reactor and the hub would (a shard's message for another shard,
//! a client's SEND to every shard, a publish numbered by the node's history and handed to every
//! shard). What crosses shards runs here deterministically: SockJS sessions owned by a shard
//! other than the one reading their requests, SENDs, and recoveries whose live messages were
//! numbered before the history read but reach the shard after it.

use super::*;
use crate::history::History;
use crate::shard::sockjs::owner;

struct Node {
    nets: Vec<Net>,
    history: Option<Arc<History>>,
    /// Publishes numbered and waiting to reach the shards (as they wait in a shard's queue).
    queued: Vec<Arc<Publish>>,
}

impl Node {
    fn new(ctx: Arc<Context>, shards: usize, history: bool) -> Node {
        let stats = Arc::new(Stats::new(shards));
        let history = history.then(|| Arc::new(History::new(&ctx.cfg, stats.clone())));
        let limits = &ctx.cfg.limits;
        let per_ip = Arc::new(PerIp::new(limits.max_connections_per_ip));
        let pending_per_ip = Arc::new(PerIp::new(limits.max_pending_per_ip));
        let per_user = Arc::new(PerUser::new(limits.max_sessions_per_user));
        let rate: Arc<crate::shard::admission::Rate> = Arc::default();
        let nets = (0..shards)
            .map(|id| {
                Net::shard(super::super::Config {
                    id,
                    shards,
                    per_ip: per_ip.clone(),
                    pending_per_ip: pending_per_ip.clone(),
                    per_user: per_user.clone(),
                    rate: rate.clone(),
                    ctx: ctx.clone(),
                    stats: stats.clone(),
                    capacity: 1000,
                    watch: None,
                    audience: None,
                    history: history.clone(),
                })
            })
            .collect();
        Node {
            nets,
            history,
            queued: Vec::new(),
        }
    }

    /// Carries messages between shards until none is left: SockJS relays to their shard, SENDs
    /// to every shard.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.nets.len() {
                let relays = std::mem::take(&mut self.nets[i].to_shard);
                let sends = std::mem::take(&mut self.nets[i].published);
                moved |= !relays.is_empty() || !sends.is_empty();
                for (to, m) in relays {
                    self.nets[to].core.command(Command::Sockjs(m));
                    self.nets[to].pump();
                }
                for p in sends {
                    self.hand_out(p, None);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the shards kept messaging each other");
    }

    /// Numbers `msg` (when its destination keeps history) and hands it to every shard.
    fn hand_out(&mut self, msg: Publish, reply: Option<&crossbeam_channel::Sender<usize>>) {
        let nets = &mut self.nets;
        let mut deliver = |m: Arc<Publish>| {
            for net in nets.iter_mut() {
                let reply = reply.cloned();
                net.core.command(Command::Publish {
                    msg: m.clone(),
                    reply,
                });
                net.pump();
            }
        };
        match &self.history {
            Some(h) => h.record(msg, deliver),
            None => deliver(Arc::new(msg)),
        }
    }

    /// A publish from the API to `topic` of the default project; how many sessions it reached.
    fn publish(&mut self, topic: &str, body: &str) -> usize {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.hand_out(message(topic, body), Some(&tx));
        self.settle();
        (0..self.nets.len()).map(|_| rx.recv().unwrap()).sum()
    }

    /// A publish numbered now and left in the shards' queues (`deliver_queued` hands it over).
    fn publish_queued(&mut self, topic: &str, body: &str) {
        let h = self.history.clone().expect("numbering needs history");
        let queued = &mut self.queued;
        h.record(message(topic, body), |m| queued.push(m));
    }

    fn deliver_queued(&mut self) {
        for m in std::mem::take(&mut self.queued) {
            for net in &mut self.nets {
                net.core.command(Command::Publish {
                    msg: m.clone(),
                    reply: None,
                });
                net.pump();
            }
        }
        self.settle();
    }

    fn client_sends(&mut self, shard: usize, key: u32, bytes: &[u8]) {
        self.nets[shard].client_sends(key, bytes);
        self.settle();
    }

    fn client_sends_frame(&mut self, shard: usize, key: u32, text: &str) {
        self.nets[shard].client_sends_frame(key, Opcode::Text, text.as_bytes());
        self.settle();
    }
}

fn message(topic: &str, body: &str) -> Publish {
    Publish::new(
        Dest::Topic {
            project: "default".into(),
            topic: topic.into(),
        },
        Bytes::copy_from_slice(body.as_bytes()),
        vec![],
    )
}

/// The bodies of the MESSAGE frames among `texts`, in order.
fn bodies(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .filter(|t| t.starts_with("MESSAGE\n"))
        .map(|t| {
            let body = t.split_once("\n\n").map_or("", |(_, b)| b);
            body.trim_end_matches('\0').to_string()
        })
        .collect()
}

fn with_history(c: &mut crate::config::Config) {
    c.projects.entry("default".into()).or_default().history =
        Some(ringcast_proto::history::Config {
            size: 100,
            ttl_ms: 60_000,
            topics: vec!["t".into()],
            queues: vec![],
        });
}

#[test]
fn a_send_on_one_shard_reaches_subscribers_on_every_shard() {
    let ctx = config(|c| {
        c.projects
            .entry("default".into())
            .or_default()
            .client_publish = true
    });
    let mut node = Node::new(ctx, 2, false);
    let sender = node.nets[0].stomp_client("0,0");
    let mut raws = Vec::new();
    for shard in 0..2 {
        raws.push((shard, node.nets[shard].raw_client()));
    }
    node.client_sends_frame(0, sender, "SEND\ndestination:/topic/t\n\nhello\0");
    for (shard, k) in raws {
        assert_eq!(node.nets[shard].texts(k), ["hello"], "shard {shard}");
    }
}

#[test]
fn a_sockjs_session_lives_on_its_owner_whichever_shard_reads_its_requests() {
    let mut node = Node::new(config(|_| {}), 2, false);
    // A session id that shard 1 owns, its requests read by shard 0.
    let id = (0..)
        .map(|i| format!("s{i}"))
        .find(|id| owner(id, 2) == 1)
        .unwrap();
    let post = |what: &str, body: &str| {
        format!(
            "POST /ws/000/{id}/{what} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let poll = node.nets[0].connect("127.0.0.1");
    node.client_sends(0, poll, post("xhr", "").as_bytes());
    let text = |node: &Node, k: u32| {
        String::from_utf8_lossy(node.nets[0].wire.get(&k).map_or(&[][..], |v| v)).into_owned()
    };
    assert!(text(&node, poll).ends_with("o\n"), "{}", text(&node, poll));
    assert_eq!(
        node.nets[1].counter(|s| &s.sockjs_sessions),
        1,
        "owned by 1"
    );
    assert_eq!(node.nets[0].counter(|s| &s.sockjs_sessions), 0);

    let send = node.nets[0].connect("127.0.0.1");
    let connect = r#"["CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\u0000"]"#;
    node.client_sends(0, send, post("xhr_send", connect).as_bytes());
    let sub = r#"["SUBSCRIBE\nid:0\ndestination:/topic/t\n\n\u0000"]"#;
    node.client_sends(0, send, post("xhr_send", sub).as_bytes());
    assert_eq!(text(&node, send).matches("HTTP/1.1 204").count(), 2);

    // The owner fans out; the poll, on the other shard, carries it.
    assert_eq!(node.publish("t", "across"), 1);
    node.nets[0].wire.remove(&poll);
    node.client_sends(0, poll, post("xhr", "").as_bytes());
    let body = text(&node, poll);
    assert!(body.contains(r#"a["CONNECTED\n"#), "{body}");
    assert!(body.contains(r#"\n\nacross\u0000"#), "{body}");
}

#[test]
fn a_recovery_gets_what_it_missed_once_even_when_live_copies_are_still_queued() {
    let mut node = Node::new(config(with_history), 2, true);
    for body in ["1", "2", "3"] {
        node.publish("t", body);
    }
    let epoch = node.history.as_ref().unwrap().epoch().to_string();
    // 4 and 5 are numbered (and in the history) but still in the shards' queues when the
    // subscriber on shard 1 reads the history.
    node.publish_queued("t", "4");
    node.publish_queued("t", "5");
    let k = node.nets[1].stomp_client("0,0");
    let sub = format!("SUBSCRIBE\nid:0\ndestination:/topic/t\nx-recover-since:{epoch}:1\n\n\0");
    node.client_sends_frame(1, k, &sub);
    node.deliver_queued();
    node.publish("t", "6");
    let texts = node.nets[1].texts(k);
    assert_eq!(bodies(&texts), ["2", "3", "4", "5", "6"], "{texts:?}");
    let first = texts.iter().find(|t| t.starts_with("MESSAGE\n")).unwrap();
    assert!(first.contains("x-recovered:true\n"), "{first}");
}

#[test]
fn a_position_from_another_epoch_is_told_it_cannot_recover() {
    let mut node = Node::new(config(with_history), 2, true);
    node.publish("t", "1");
    let k = node.nets[0].stomp_client("0,0");
    let sub = "SUBSCRIBE\nid:0\ndestination:/topic/t\nx-recover-since:0000000000000000:1\nreceipt:r\n\n\0";
    node.client_sends_frame(0, k, sub);
    let texts = node.nets[0].texts(k);
    let receipt = texts.iter().find(|t| t.starts_with("RECEIPT\n")).unwrap();
    assert!(receipt.contains("x-recovered:false\n"), "{receipt}");
    node.publish("t", "2");
    assert_eq!(bodies(&node.nets[0].texts(k)), ["2"]);
}

#[test]
fn a_replay_counts_against_the_send_queue_of_a_client_that_does_not_read() {
    let mut node = Node::new(
        config(|c| {
            with_history(c);
            c.limits.send_queue = 4;
        }),
        2,
        true,
    );
    for i in 1..=10 {
        node.publish("t", &i.to_string());
    }
    let epoch = node.history.as_ref().unwrap().epoch().to_string();
    let k = node.nets[1].stomp_client("0,0");
    node.nets[1].stall(k);
    let sub = format!("SUBSCRIBE\nid:0\ndestination:/topic/t\nx-recover-since:{epoch}:0\n\n\0");
    node.client_sends_frame(1, k, &sub);
    node.publish("t", "11");
    // Ten replayed and one live into a queue of four behind the one in flight: the oldest
    // replayed ones went first, the newest survive, in order, none twice.
    assert_eq!(node.nets[1].counter(|s| &s.dropped), 6);
    node.nets[1].resume(k);
    let got = bodies(&node.nets[1].texts(k));
    assert_eq!(got, ["1", "8", "9", "10", "11"]);
}
