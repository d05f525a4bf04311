//! The floor: a bare TCP server with the same shards, fd tables, rings and wake-ups as ringcast
//! but no WebSocket implementation. It accepts, answers whatever arrives first with a fixed
//! `101` (no parsing, no key check), holds the sockets, and on a publish writes the same
//! pre-encoded bytes to every one of them through io_uring. Whatever ringcast costs beyond this
//! is ringcast's own cost; everything else is the kernel's.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Barrier};

use ringcast::hub::Hub;
use ringcast::reactor::ring::{BufferConfig, Event, Ring};
use ringcast::shard::inbox::{Command, Inbox};

pub struct FloorServer {
    pub hub: Hub,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl FloorServer {
    /// Starts `shards` floor shards listening on `addr` (port 0 picks one; see `addr`).
    pub fn start(addr: SocketAddr, shards: usize) -> Result<(FloorServer, SocketAddr), String> {
        let (hub, inboxes) = Hub::new(shards).map_err(|e| e.to_string())?;
        // Floor shards keep no subscription index: every publish goes to all of them.
        let hub = hub.visit_all();
        // Reserve the port so every shard's SO_REUSEPORT listener shares it.
        let (probe, addr) =
            ringcast::reactor::reserve_port(addr).map_err(|e| format!("floor bind {addr}: {e}"))?;
        let barrier = Arc::new(Barrier::new(shards + 1));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let handles = inboxes
            .into_iter()
            .enumerate()
            .map(|(i, inbox)| {
                let barrier = barrier.clone();
                let core = cores.get(i % cores.len().max(1)).copied();
                std::thread::spawn(move || {
                    let _ = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES);
                    barrier.wait();
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    if let Err(e) = shard(addr, inbox) {
                        eprintln!("floor shard {i}: {e}");
                    }
                })
            })
            .collect();
        barrier.wait();
        // Give the shards a moment to listen before the reservation goes.
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(probe);
        Ok((FloorServer { hub, handles }, addr))
    }

    pub fn stop(self) {
        self.hub.shutdown();
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn shard(addr: SocketAddr, inbox: Inbox) -> std::io::Result<()> {
    let l = ringcast::reactor::listener(addr)?;
    let mut ring = Ring::new(
        4096,
        BufferConfig {
            count: 64,
            size: 4096,
        },
        false,
    )?;
    ring.accept(l.as_raw_fd());
    ring.wait_wake(inbox.wake.as_raw_fd());
    let answer = bytes::Bytes::from_static(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut answered: Vec<bool> = Vec::new();
    let mut scratch = Vec::new();
    let mut done = false;
    while !done {
        ring.run_once(&mut scratch, |ring, ev, _| match ev {
            Event::Accepted { res, more } => {
                if let Ok(fd) = res {
                    let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
                    ring.recv(fd.as_raw_fd(), fds.len() as u32);
                    fds.push(fd);
                    answered.push(false);
                }
                if !more {
                    ring.accept(l.as_raw_fd());
                }
            }
            Event::Received { key, res, more } => {
                let k = key as usize;
                let open = match res {
                    Ok(0) => false,
                    Ok(_) => {
                        if !answered[k] {
                            answered[k] = true;
                            ring.send(fds[k].as_raw_fd(), key, answer.clone(), 0);
                        }
                        true
                    }
                    // Out of read buffers: they are back after this batch; read again.
                    Err(e) => e.raw_os_error() == Some(libc::ENOBUFS),
                };
                if open && !more {
                    ring.recv(fds[k].as_raw_fd(), key);
                }
            }
            Event::Sent {
                key,
                res: Ok(n),
                buf,
                offset,
            } if offset + n < buf.len() => {
                ring.send(fds[key as usize].as_raw_fd(), key, buf, offset + n);
            }
            Event::Woken => {
                while let Ok(cmd) = inbox.rx.try_recv() {
                    match cmd {
                        Command::Publish { msg, reply } => {
                            for (i, fd) in fds.iter().enumerate() {
                                ring.send(fd.as_raw_fd(), i as u32, msg.raw.clone(), 0);
                            }
                            if let Some(r) = reply {
                                let _ = r.send(fds.len());
                            }
                        }
                        Command::Shutdown => done = true,
                        Command::Reload(_)
                        | Command::Sockjs(_)
                        | Command::Answer(_)
                        | Command::HandOver(_)
                        | Command::Recovered { .. } => {}
                        Command::Census(reply) => {
                            let _ = reply.send(Default::default());
                        }
                        Command::Destinations { reply, .. } => {
                            let _ = reply.send(Vec::new());
                        }
                        Command::Disconnect { reply, .. } | Command::Barrier(reply) => {
                            let _ = reply.send(0);
                        }
                        Command::Sessions { reply, .. } => {
                            let _ = reply.send(Vec::new());
                        }
                    }
                }
                ring.wait_wake(inbox.wake.as_raw_fd());
            }
            _ => {}
        })?;
    }
    Ok(())
}
