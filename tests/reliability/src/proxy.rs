//! A TCP fault proxy (no toxiproxy is installable here): listens on a free
//! loopback port and forwards to an upstream, in one of these modes, which a
//! test switches at any moment:
//!
//! - [`Mode::Pass`]: bytes flow as they come;
//! - [`Mode::Latency`]: every chunk waits that long before it is forwarded;
//! - [`Mode::Reset`]: every open connection is reset (RST, `SO_LINGER` 0)
//!   and new ones are reset at once, while the mode lasts;
//! - [`Mode::BlackHole`]: connections are accepted and held, nothing is
//!   forwarded either way (reads stop, so senders block), as on a network
//!   partition; when the mode ends, traffic resumes where it stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Latency(Duration),
    Reset,
    BlackHole,
}

pub struct FaultProxy {
    port: u16,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    resets: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let (mode, modes) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let resets = Arc::new(AtomicU64::new(0));
        let (acc, res) = (accepted.clone(), resets.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                acc.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, upstream, modes.clone(), res.clone()));
            }
        });
        FaultProxy {
            port,
            mode,
            accepted,
            resets,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted and connections reset so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.accepted.load(Ordering::Relaxed),
            self.resets.load(Ordering::Relaxed),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reset(stream: &TcpStream) {
    reset_fd(std::os::fd::AsRawFd::as_raw_fd(stream));
}

/// Linger 0: closing the socket sends RST instead of FIN.
fn reset_fd(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a properly sized value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

async fn connection(
    client: TcpStream,
    upstream: u16,
    mut modes: watch::Receiver<Mode>,
    resets: Arc<AtomicU64>,
) {
    if *modes.borrow() == Mode::Reset {
        reset(&client);
        resets.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let fds = [
        std::os::fd::AsRawFd::as_raw_fd(&client),
        std::os::fd::AsRawFd::as_raw_fd(&server),
    ];
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, modes.clone());
    let down = pipe(server_read, client_write, modes.clone());
    let reset_mode = async {
        loop {
            if *modes.borrow_and_update() == Mode::Reset {
                // The sockets are still open (the pipes own them until the
                // select drops them, right after this).
                fds.iter().for_each(|fd| reset_fd(*fd));
                return;
            }
            if modes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        halves = async { tokio::join!(up, down) } => {
            let _ = halves;
        }
        () = reset_mode => {
            resets.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies one direction under the current mode; on Reset it returns with
/// both halves, which are then dropped with linger 0.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut modes: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Held while black-holed: nothing read, nothing forwarded.
        loop {
            let mode = *modes.borrow_and_update();
            match mode {
                Mode::BlackHole => {
                    if modes.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Reset => {
                    reset(from.as_ref());
                    reset(to.as_ref());
                    return;
                }
                _ => break,
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            // A mode change while waiting for data: look again.
            changed = modes.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        loop {
            let mode = *modes.borrow();
            match mode {
                Mode::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                Mode::BlackHole => {
                    if modes.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Reset => {
                    reset(from.as_ref());
                    reset(to.as_ref());
                    return;
                }
                Mode::Pass => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
