//! systemd's notification protocol, the part abnix uses: `STATUS=` lines,
//! which `systemctl status abnix-update` shows while the updater works.
//!
//! sd_notify(3): the service manager passes a datagram socket in
//! `$NOTIFY_SOCKET`, a path, or an abstract-namespace name when it starts
//! with `@`; each datagram is newline-separated `KEY=value` assignments.
//! systemd only accepts them from a unit with `NotifyAccess=main` (or
//! `all`), which the abnix units set: for `Type=oneshot` the default is
//! `none` (systemd.service(5), `NotifyAccess=`).
//!
//! Notifying is best effort: without the variable, or when a send fails
//! or would block, nothing happens beyond a debug log line.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use abnix_core::progress::Progress;

/// Sends `STATUS=` to the service manager, if there is one.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; a silent one without it.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|name| {
            let connect = || -> std::io::Result<(UnixDatagram, SocketAddr)> {
                let socket = UnixDatagram::unbound()?;
                // A receiver that does not read (its queue holds a few
                // datagrams) must never stall an update: a status line is
                // dropped instead.
                socket.set_nonblocking(true)?;
                Ok((socket, socket_address(&name)?))
            };
            connect()
                .inspect_err(|e| tracing::debug!("NOTIFY_SOCKET {name:?} unusable: {e}"))
                .ok()
        });
        Notifier { target }
    }

    /// A notifier that sends nothing.
    pub fn silent() -> Notifier {
        Notifier { target: None }
    }

    /// Sets the unit's status line.
    pub fn status(&self, text: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        let message = status_message(text);
        if let Err(e) = socket.send_to_addr(message.as_bytes(), address) {
            tracing::debug!("sending STATUS= to the service manager: {e}");
        }
    }
}

/// `@name` is an abstract-namespace socket, anything else a path.
fn socket_address(name: &OsStr) -> std::io::Result<SocketAddr> {
    match name.as_bytes().strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(name),
    }
}

/// One `STATUS=` assignment: a status is one line.
fn status_message(text: &str) -> String {
    format!("STATUS={}\n", text.replace(['\n', '\r'], " "))
}

/// How often [`NotifyingProgress`] updates the status line.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// Passes progress on, and puts the phase and its percentage in the status
/// line every few seconds.
pub struct NotifyingProgress<'a> {
    inner: &'a dyn Progress,
    notifier: &'a Notifier,
    phase: Mutex<Phase>,
}

struct Phase {
    name: String,
    total: Option<u64>,
    done: u64,
    last_status: Instant,
}

impl<'a> NotifyingProgress<'a> {
    pub fn new(inner: &'a dyn Progress, notifier: &'a Notifier) -> Self {
        NotifyingProgress {
            inner,
            notifier,
            phase: Mutex::new(Phase {
                name: String::new(),
                total: None,
                done: 0,
                last_status: Instant::now(),
            }),
        }
    }
}

impl Progress for NotifyingProgress<'_> {
    fn start(&self, phase: &str, total: Option<u64>) {
        self.inner.start(phase, total);
        let mut current = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        *current = Phase {
            name: phase.to_owned(),
            total,
            done: 0,
            last_status: Instant::now(),
        };
        self.notifier.status(phase);
    }

    fn advance(&self, bytes: u64) {
        self.inner.advance(bytes);
        let mut current = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        current.done += bytes;
        if current.last_status.elapsed() >= STATUS_INTERVAL {
            current.last_status = Instant::now();
            let line = match current.total {
                Some(total) if total > 0 => {
                    format!("{}: {}%", current.name, current.done * 100 / total)
                }
                _ => format!("{}: {} bytes", current.name, current.done),
            };
            self.notifier.status(&line);
        }
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                socket_address(path.as_os_str()).unwrap(),
            )),
        };
        notifier.status("writing slot b\nsecond line");
        let mut buf = [0; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=writing slot b second line\n");
    }

    #[test]
    fn abstract_names_start_with_an_at_sign() {
        let address = socket_address(OsStr::new("@abnix/test")).unwrap();
        assert_eq!(address.as_abstract_name(), Some(&b"abnix/test"[..]));
        let address = socket_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            address.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
