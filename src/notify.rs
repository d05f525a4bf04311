//! systemd's readiness notification (`Type=notify`): one datagram to `$NOTIFY_SOCKET`. A
//! server says `READY=1` once it serves; a successor started by `ringcast upgrade` also says
//! `MAINPID=` its own pid before its predecessor exits, so systemd follows the service to the
//! new process instead of stopping it. Without the variable (not under systemd) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`KEY=VALUE` lines) to systemd, if it is listening.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket: its name follows the `@`.
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
    } else {
        sock.send_to(state.as_bytes(), path)
    };
    if let Err(e) = sent {
        tracing::warn!("telling systemd {state:?} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_datagram_reaches_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("ringcast-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::notify_to(path.as_os_str(), "MAINPID=7\nREADY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=7\nREADY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
