//! One shard's io_uring: setup and feature probing, the provided read buffers, and every
//! operation the reactor submits. This is the only module with `unsafe`: each operation's memory
//! (read buffers, in-flight send buffers, the wake-up counter, the tick timespec) is owned here
//! until the kernel reports the operation complete, which is what makes the public API safe.
//!
//! Two I/O paths. The modern one (Linux ≥ 6.0): multishot accept, multishot recv into a
//! registered buffer ring, so an idle connection has no read buffer and no pending op to
//! re-arm. The compat one (5.10–5.19, or `--io-compat`): single-shot accept and recv, with
//! buffers handed to the kernel by `PROVIDE_BUFFERS`; still no per-connection read buffer.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use io_uring::types::{BufRingEntry, Fd, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use slab::Slab;

const BGID: u16 = 0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Wake = 4,
    Tick = 5,
    Provide = 6,
    Connect = 7,
    Cancel = 8,
}

/// Connection keys get 24 bits of an operation's `user_data` (op 8, key 24, aux 32).
pub const MAX_KEY: u32 = (1 << 24) - 1;

fn user_data(op: Op, key: u32, aux: u32) -> u64 {
    // A key that did not fit would complete as another connection's event.
    assert!(
        key <= MAX_KEY,
        "connection key {key} does not fit user_data"
    );
    (op as u64) << 56 | u64::from(key) << 32 | u64::from(aux)
}

/// How long dropping a ring waits for the kernel to finish cancelled operations before it
/// leaks their memory instead.
const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// What a completion means to the reactor.
#[derive(Debug)]
pub enum Event {
    /// A new connection (or the accept's error). `more` = the multishot accept is still armed.
    Accepted {
        res: io::Result<OwnedFd>,
        more: bool,
    },
    /// Bytes for connection `key`, already copied into the caller's scratch buffer (`Ok(0)`:
    /// the peer closed). `more` = the recv is still armed.
    Received {
        key: u32,
        res: io::Result<usize>,
        more: bool,
    },
    /// A send finished; `buf` is handed back so a short write can resume from `res` bytes on.
    Sent {
        key: u32,
        res: io::Result<usize>,
        buf: Bytes,
        offset: usize,
    },
    /// An outgoing connection (load generator) finished connecting, or failed to.
    Connected { key: u32, res: io::Result<usize> },
    /// Another thread wrote the shard's eventfd.
    Woken,
    /// The periodic timeout fired.
    Tick,
    /// Completions the reactor does not act on (buffer provisioning).
    Internal,
}

/// What the ring could do on this kernel, decided once at start-up.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    pub multishot: bool,
}

/// Read-buffer configuration: `count` buffers of `size` bytes, shared by all of a shard's
/// connections.
#[derive(Debug, Clone, Copy)]
pub struct BufferConfig {
    pub count: u16,
    pub size: u32,
}

pub struct Ring {
    uring: IoUring,
    /// Dropped only once no operation can still write into it (see `Drop`).
    bufs: std::mem::ManuallyDrop<ReadBuffers>,
    /// Send buffers the kernel is reading from, with the offset each send started at.
    sends: Slab<(Bytes, usize, u32)>,
    /// Addresses of connects not yet completed, boxed so a growing slab never moves one the
    /// kernel has yet to read.
    connects: Slab<Box<socket2::SockAddr>>,
    wake_buf: Box<u64>,
    tick: Box<Timespec>,
    features: Features,
    /// Completions reaped early to make room when the submission queue was full.
    backlog: Vec<cqueue::Entry>,
    /// Operations submitted whose last completion has not been seen (a multishot operation
    /// counts once, until a completion without `F_MORE`).
    inflight: usize,
}

impl Ring {
    /// Sets up a ring; `compat` forces the single-shot path even where multishot exists.
    pub fn new(entries: u32, buffers: BufferConfig, compat: bool) -> io::Result<Ring> {
        let modern = !compat && probe_modern()?;
        let uring = if modern {
            IoUring::builder()
                .setup_cqsize(entries * 4)
                .setup_single_issuer()
                .setup_coop_taskrun()
                .setup_defer_taskrun()
                .build(entries)
                .or_else(|_| IoUring::builder().setup_cqsize(entries * 4).build(entries))?
        } else {
            IoUring::builder()
                .setup_cqsize(entries * 4)
                .build(entries)?
        };
        let mut ring = Ring {
            bufs: std::mem::ManuallyDrop::new(ReadBuffers::allocate(buffers)?),
            uring,
            sends: Slab::new(),
            connects: Slab::new(),
            wake_buf: Box::new(0),
            tick: Box::new(Timespec::new()),
            features: Features { multishot: false },
            backlog: Vec::new(),
            inflight: 0,
        };
        ring.features.multishot = modern && ring.bufs.register_ring(&ring.uring).is_ok();
        if !ring.features.multishot {
            // SAFETY: the buffer memory is owned by `ring.bufs` for the ring's whole life; the
            // kernel may write any provided buffer until its id comes back in a completion.
            let e = unsafe { ring.bufs.provide_all() };
            ring.push(e.user_data(user_data(Op::Provide, 0, 0)));
        }
        Ok(ring)
    }

    pub fn features(&self) -> Features {
        self.features
    }

    /// Arms accepting on a listening socket (multishot where available).
    pub fn accept(&mut self, listener: RawFd) {
        let e = if self.features.multishot {
            opcode::AcceptMulti::new(Fd(listener))
                .flags(libc::SOCK_CLOEXEC)
                .build()
        } else {
            opcode::Accept::new(Fd(listener), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(libc::SOCK_CLOEXEC)
                .build()
        };
        self.push(e.user_data(user_data(Op::Accept, 0, 0)));
    }

    /// Arms receiving on connection `key`; data lands in a shared provided buffer.
    pub fn recv(&mut self, fd: RawFd, key: u32) {
        let e = if self.features.multishot {
            opcode::RecvMulti::new(Fd(fd), BGID).build()
        } else {
            opcode::Recv::new(Fd(fd), std::ptr::null_mut(), self.bufs.cfg.size)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.push(e.user_data(user_data(Op::Recv, key, 0)));
    }

    /// Sends `buf[offset..]` on connection `key`. The ring holds `buf` until the completion,
    /// which hands it back in `Event::Sent`.
    pub fn send(&mut self, fd: RawFd, key: u32, buf: Bytes, offset: usize) {
        let len = (buf.len() - offset) as u32;
        let ptr = buf[offset..].as_ptr();
        let slot = self.sends.insert((buf, offset, key));
        let e = opcode::Send::new(Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, key, slot as u32));
        self.push(e);
    }

    /// Connects socket `fd` (connection `key`) to `addr`; completes as `Event::Connected`.
    pub fn connect(&mut self, fd: RawFd, key: u32, addr: std::net::SocketAddr) {
        let slot = self.connects.insert(Box::new(addr.into()));
        let a = &self.connects[slot];
        let e = opcode::Connect::new(Fd(fd), a.as_ptr().cast(), a.len())
            .build()
            .user_data(user_data(Op::Connect, key, slot as u32));
        self.push(e);
    }

    /// Arms one read of the shard's eventfd: the cross-shard wake-up, without epoll.
    pub fn wait_wake(&mut self, eventfd: RawFd) {
        let ptr = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let e = opcode::Read::new(Fd(eventfd), ptr, 8)
            .build()
            .user_data(user_data(Op::Wake, 0, 0));
        self.push(e);
    }

    /// Arms one timeout; the reactor re-arms it on every `Tick`.
    pub fn tick_after(&mut self, d: std::time::Duration) {
        *self.tick = Timespec::from(d);
        let e = opcode::Timeout::new(&*self.tick)
            .build()
            .user_data(user_data(Op::Tick, 0, 0));
        self.push(e);
    }

    /// Submits what is queued and waits for at least one completion, then turns every
    /// available completion into an `Event` via `on_event`. Received bytes are copied into
    /// `scratch` (valid for that event only) and the buffer goes straight back to the kernel.
    pub fn run_once(
        &mut self,
        scratch: &mut Vec<u8>,
        mut on_event: impl FnMut(&mut Ring, Event, &mut [u8]),
    ) -> io::Result<()> {
        if self.backlog.is_empty() {
            match self.uring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut cqes = std::mem::take(&mut self.backlog);
        cqes.extend(self.uring.completion());
        for cqe in cqes.drain(..) {
            self.completed(&cqe);
            let ev = self.decode(&cqe, scratch);
            on_event(self, ev, scratch.as_mut_slice());
        }
        if self.backlog.is_empty() {
            self.backlog = cqes; // keep the allocation
        }
        Ok(())
    }

    fn decode(&mut self, cqe: &cqueue::Entry, scratch: &mut Vec<u8>) -> Event {
        let ud = cqe.user_data();
        let key = ((ud >> 32) & 0x00ff_ffff) as u32;
        let aux = ud as u32;
        let res = cqe.result();
        let more = cqueue::more(cqe.flags());
        let result = || {
            if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            }
        };
        match (ud >> 56) as u8 {
            x if x == Op::Accept as u8 => Event::Accepted {
                // SAFETY: a successful accept's result is a new descriptor nobody else owns.
                res: result().map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
                more,
            },
            x if x == Op::Recv as u8 => {
                scratch.clear();
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    let n = if res > 0 { res as usize } else { 0 };
                    // SAFETY: the kernel filled buffer `bid` and reported it; it will not touch
                    // it again until it is recycled, just below.
                    scratch.extend_from_slice(unsafe { self.bufs.get(bid, n) });
                    self.recycle(bid);
                }
                Event::Received {
                    key,
                    res: result(),
                    more,
                }
            }
            x if x == Op::Send as u8 => {
                let (buf, offset, _) = self.sends.remove(aux as usize);
                Event::Sent {
                    key,
                    res: result(),
                    buf,
                    offset,
                }
            }
            x if x == Op::Connect as u8 => {
                self.connects.remove(aux as usize);
                Event::Connected { key, res: result() }
            }
            x if x == Op::Wake as u8 => Event::Woken,
            // Nothing left to cancel is an answer, not a failure.
            x if x == Op::Cancel as u8 => Event::Internal,
            x if x == Op::Tick as u8 => Event::Tick,
            _ => {
                if res < 0 {
                    tracing::warn!(
                        "io_uring internal op failed: {}",
                        io::Error::from_raw_os_error(-res)
                    );
                }
                Event::Internal
            }
        }
    }

    /// Counts an operation finished when its last completion arrives.
    fn completed(&mut self, cqe: &cqueue::Entry) {
        if !cqueue::more(cqe.flags()) {
            self.inflight = self.inflight.saturating_sub(1);
        }
    }

    /// Operations the kernel may still be working on.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Cancels every operation in flight and waits (up to `TEARDOWN`) for their last
    /// completions, discarding them. Returns whether none is left.
    pub fn cancel_all(&mut self) -> bool {
        if self.inflight == 0 {
            return true;
        }
        let cancel = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(user_data(Op::Cancel, 0, 0));
        self.push(cancel);
        let until = std::time::Instant::now() + TEARDOWN;
        let wait = Timespec::new().nsec(50_000_000);
        while self.inflight > 0 && std::time::Instant::now() < until {
            let args = io_uring::types::SubmitArgs::new().timespec(&wait);
            match self.uring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(_) => break,
            }
            let mut cqes = std::mem::take(&mut self.backlog);
            cqes.extend(self.uring.completion());
            for cqe in &cqes {
                self.completed(cqe);
            }
        }
        self.inflight == 0
    }

    /// Cancels what a shard handing its connections over has in flight, without waiting:
    /// the last completions arrive through `run_once` as usual (a connection handed to
    /// another process must see its recv end without a shutdown, and its send finish or
    /// fail, before its state is read). Each is cancelled by its own `user_data` (`keys`'
    /// receives, every send, accept, wake-up, tick): a cancel-any walks every pending request
    /// again for each one it cancels, which took 1.5 s for 10,000 receives. (Connects are the
    /// load generator's; a server has none.)
    pub fn cancel_everything(&mut self, keys: &[u32]) {
        let mut targets: Vec<u64> = keys.iter().map(|&k| user_data(Op::Recv, k, 0)).collect();
        targets.extend(
            self.sends
                .iter()
                .map(|(slot, &(_, _, key))| user_data(Op::Send, key, slot as u32)),
        );
        for op in [Op::Accept, Op::Wake, Op::Tick] {
            targets.push(user_data(op, 0, 0));
        }
        for ud in targets {
            let cancel =
                opcode::AsyncCancel::new(ud)
                    .build()
                    .user_data(user_data(Op::Cancel, 0, 0));
            self.push(cancel);
        }
    }

    fn recycle(&mut self, bid: u16) {
        if self.features.multishot {
            self.bufs.recycle_ring(bid);
        } else {
            // SAFETY: as in `new`: the buffer memory outlives every operation of the ring.
            let e = unsafe { self.bufs.provide_one(bid) };
            self.push(e.user_data(user_data(Op::Provide, 0, 0)));
        }
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this module points only at memory the ring owns
            // until the matching completion: read buffers (`bufs`), send buffers (`sends`),
            // connect addresses (`connects`), `wake_buf`, and `tick` (copied by the kernel at
            // submission).
            if unsafe { self.uring.submission().push(&e) }.is_ok() {
                self.inflight += 1;
                return;
            }
            // The queue is full: hand it to the kernel, reaping completions if it asks us to.
            match self.uring.submit() {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    self.backlog.extend(self.uring.completion());
                }
                Err(err) => tracing::error!("io_uring submit failed: {err}"),
            }
        }
    }
}

/// The shard's read buffers: `count` × `size` bytes in one allocation, plus (modern path) the
/// ring of buffer descriptors registered with the kernel.
struct ReadBuffers {
    cfg: BufferConfig,
    mem: *mut u8,
    mem_layout: Layout,
    ring: Option<(*mut BufRingEntry, Layout)>,
    tail: u16,
}

impl ReadBuffers {
    fn allocate(cfg: BufferConfig) -> io::Result<Self> {
        if !cfg.count.is_power_of_two() || cfg.count > 32768 || cfg.size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read buffer count must be a power of two ≤ 32768, size > 0",
            ));
        }
        let mem_layout = Layout::from_size_align(cfg.count as usize * cfg.size as usize, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count ≥ 1, size > 0).
        let mem = unsafe { alloc_zeroed(mem_layout) };
        if mem.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(ReadBuffers {
            cfg,
            mem,
            mem_layout,
            ring: None,
            tail: 0,
        })
    }

    fn addr(&self, bid: u16) -> *mut u8 {
        // In bounds: bid < count, checked by the kernel handing back only ids we gave it.
        self.mem.wrapping_add(bid as usize * self.cfg.size as usize)
    }

    /// # Safety
    /// The kernel must be done with buffer `bid` (its id came back in a completion) and must
    /// not get it back before the returned slice is dropped.
    unsafe fn get(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(self.cfg.size as usize);
        // SAFETY: per the contract above, and `addr(bid)..+len` lies inside `mem`.
        unsafe { std::slice::from_raw_parts(self.addr(bid), len) }
    }

    fn register_ring(&mut self, uring: &IoUring) -> io::Result<()> {
        let n = self.cfg.count as usize;
        let layout = Layout::from_size_align(n * std::mem::size_of::<BufRingEntry>(), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: non-zero size; zeroed memory is a valid (empty) ring with tail 0.
        let entries = unsafe { alloc_zeroed(layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // SAFETY: `entries` is page-aligned, `n` entries long, and stays allocated until
        // `Drop`, after the ring (declared first in `Ring`) has been torn down.
        let reg = unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(entries as u64, self.cfg.count, BGID, 0)
        };
        if let Err(e) = reg {
            // SAFETY: allocated just above with this layout, never shared.
            unsafe { dealloc(entries.cast(), layout) };
            return Err(e);
        }
        self.ring = Some((entries, layout));
        for bid in 0..self.cfg.count {
            self.recycle_ring(bid);
        }
        Ok(())
    }

    /// Gives buffer `bid` back to the kernel through the buffer ring.
    fn recycle_ring(&mut self, bid: u16) {
        let Some((entries, _)) = self.ring else {
            return;
        };
        let mask = self.cfg.count - 1;
        // SAFETY: `entries` has `count` slots and `tail & mask` < count; the kernel reads a
        // slot only after the tail store below publishes it.
        unsafe {
            let e = &mut *entries.add((self.tail & mask) as usize);
            e.set_addr(self.addr(bid) as u64);
            e.set_len(self.cfg.size);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the ring header overlays entry 0's `resv` and is only ever
        // written by us; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// # Safety
    /// The buffer memory must outlive the ring's use of it (it lives as long as `self`).
    unsafe fn provide_all(&self) -> squeue::Entry {
        opcode::ProvideBuffers::new(self.mem, self.cfg.size as i32, self.cfg.count, BGID, 0).build()
    }

    /// # Safety
    /// As `provide_all`, and the kernel must be done with `bid`.
    unsafe fn provide_one(&self, bid: u16) -> squeue::Entry {
        opcode::ProvideBuffers::new(self.addr(bid), self.cfg.size as i32, 1, BGID, bid).build()
    }
}

impl Drop for ReadBuffers {
    fn drop(&mut self) {
        // SAFETY: both allocations were made in this type with these layouts, and `Ring` drops
        // its `ReadBuffers` only once no operation is in flight and the buffer ring is
        // unregistered (see `Drop for Ring`).
        unsafe {
            if let Some((entries, layout)) = self.ring.take() {
                dealloc(entries.cast(), layout);
            }
            dealloc(self.mem, self.mem_layout);
        }
    }
}

impl Drop for Ring {
    /// A ring dropped with operations in flight (a shard that exits with live connections)
    /// must not free memory the kernel can still write: read buffers, send buffers, connect
    /// addresses, the wake-up counter. Closing the ring fd cancels its requests only
    /// asynchronously, so cancel everything here and wait for every last completion; if the
    /// kernel has not finished by `TEARDOWN`, leak that memory instead of freeing it.
    fn drop(&mut self) {
        self.cancel_all();
        if self.inflight > 0 {
            tracing::warn!(
                inflight = self.inflight,
                "io_uring operations still in flight at teardown: leaking their buffers"
            );
            std::mem::forget(std::mem::take(&mut self.sends));
            std::mem::forget(std::mem::take(&mut self.connects));
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
        } else {
            if self.bufs.ring.is_some() {
                let _ = self.uring.submitter().unregister_buf_ring(BGID);
            }
            // SAFETY: no operation is in flight any more and the buffer ring is unregistered,
            // so the kernel holds no reference into the buffers; dropped exactly once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.bufs) };
        }
    }
}

/// Whether this kernel offers what the modern path needs, asked of io_uring itself rather
/// than read from the version string (distribution kernels backport): multishot recv and the
/// zero-copy send arrived together in 6.0, so `SEND_ZC` in the opcode probe stands for them;
/// the buffer ring is then tried for real at registration (`register_ring`).
fn probe_modern() -> io::Result<bool> {
    let uring = IoUring::new(2)?;
    let mut probe = io_uring::Probe::new();
    if uring.submitter().register_probe(&mut probe).is_err() {
        return Ok(false);
    }
    Ok(probe.is_supported(opcode::SendZc::CODE) && probe.is_supported(opcode::AsyncCancel2::CODE))
}

/// Receives bytes on a Unix socket with the descriptors another process passed along
/// (`SCM_RIGHTS`, for `ringcast upgrade`): the descriptors are installed in this thread's fd
/// table, close-on-exec, and owned by the caller from here on.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 253]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors in this table for this
            // message; no other owner exists.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(
            "descriptors were lost: control message truncated",
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn dropping_a_busy_ring_waits_for_the_kernel() {
        for compat in [false, true] {
            let mut ring = Ring::new(
                64,
                BufferConfig {
                    count: 8,
                    size: 4096,
                },
                compat,
            )
            .unwrap();
            let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            let (c, _d) = std::os::unix::net::UnixStream::pair().unwrap();
            let ev = nix::sys::eventfd::EventFd::new().unwrap();
            // A recv that will never complete, a wake-up read, a long timeout, and a send
            // stuck behind a full socket buffer: all of it holds memory the kernel may write.
            ring.recv(a.as_raw_fd(), 1);
            ring.wait_wake(ev.as_raw_fd());
            ring.tick_after(std::time::Duration::from_secs(3600));
            c.set_nonblocking(true).unwrap();
            while (&c).write(&[0u8; 65536]).is_ok() {}
            ring.send(c.as_raw_fd(), 2, Bytes::from(vec![7u8; 1 << 20]), 0);
            let mut scratch = Vec::new();
            // Let the kernel pick them up (and complete the buffer provisioning, if any).
            let _ = ring.uring.submit();
            while !ring.uring.completion().is_empty() {
                ring.run_once(&mut scratch, |_, _, _| {}).unwrap();
            }
            assert!(ring.inflight() >= 4, "{}", ring.inflight());
            assert!(
                ring.cancel_all(),
                "compat={compat}: {} left",
                ring.inflight()
            );
            assert_eq!(ring.inflight(), 0);
        }
    }

    #[test]
    #[should_panic(expected = "does not fit user_data")]
    fn a_key_beyond_24_bits_is_refused() {
        user_data(Op::Recv, MAX_KEY + 1, 0);
    }
}
