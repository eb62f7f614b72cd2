//! Where the binaries' `tracing` events go: natively to journald when stderr
//! is the journal (each event with its priority and its fields), plain lines
//! on stderr otherwise.
//!
//! A service's stderr reaches the journal as a stream, whose every line
//! journald files at one priority (info), so `journalctl -p warning` would
//! show no warning. systemd sets `JOURNAL_STREAM` to the device and inode of
//! that stream (systemd.exec(5)); when it matches stderr, events are sent to
//! the journal's socket instead, in its native protocol (systemd's
//! "Native Journal Protocol"): `PRIORITY` from the level, `MESSAGE` as the
//! plain line would read, and every field of the event as `ABNIX_<NAME>`
//! (`journalctl ABNIX_VERSION=4`).

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// journald's socket for native messages.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Set once events go to the journal.
static TO_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Sets the global subscriber: `RUST_LOG` overrides the default level
/// (info). Natively to the journal when stderr is it; otherwise on stderr,
/// where lines off a terminal carry neither colour codes nor a timestamp.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        if let Ok(journal) = JournalLayer::connect(Path::new(JOURNAL_SOCKET)) {
            TO_JOURNAL.store(true, Ordering::Relaxed);
            tracing_subscriber::registry()
                .with(journal.with_filter(filter))
                .init();
            return;
        }
    }
    let terminal = io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(false)
        .with_ansi(terminal);
    if terminal {
        logs.init();
    } else {
        logs.without_time().init();
    }
}

/// The error a binary ends with: as an event of priority err in the
/// journal, else as `PROGRAM: error: TEXT` on stderr.
pub fn report_error(program: &str, text: &str) {
    if TO_JOURNAL.load(Ordering::Relaxed) {
        tracing::error!("{text}");
    } else {
        eprintln!("{program}: error: {text}");
    }
}

/// Whether stderr is the stream systemd connected to the journal.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(stream) = stream.to_str() else {
        return false;
    };
    // fstat(2) of descriptor 2, through a duplicate of it.
    let stat = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|file| file.metadata());
    stat.is_ok_and(|stat| journal_stream_is(stream, stat.dev(), stat.ino()))
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, both decimal) names the file
/// with device `dev` and inode `ino`. A child whose stderr was redirected
/// inherits the variable but not the stream, hence the comparison.
fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    value
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// syslog(3)'s priority of a level: err, warning, info, debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Sends each event to the journal as one datagram.
struct JournalLayer {
    socket: UnixDatagram,
    /// `SYSLOG_IDENTIFIER`: the program's name, as journald gives lines of
    /// its stderr.
    identifier: String,
    /// Where a message goes that the socket does not take.
    fallback: fn(&str),
}

fn to_stderr(message: &str) {
    let _ = writeln!(io::stderr(), "{message}");
}

impl JournalLayer {
    fn connect(path: &Path) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A journald that does not read (restarting, overloaded) must not
        // stop the updater mid-write: a full queue is a refused message.
        socket.set_nonblocking(true)?;
        let identifier = std::env::args_os()
            .next()
            .and_then(|arg0| {
                Path::new(&arg0)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "abnix".to_owned());
        Ok(JournalLayer {
            socket,
            identifier,
            fallback: to_stderr,
        })
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let message = fields.line();
        let mut entry = Vec::with_capacity(256 + message.len());
        append(&mut entry, "PRIORITY", priority(meta.level()).to_string());
        append(&mut entry, "MESSAGE", &message);
        append(&mut entry, "SYSLOG_IDENTIFIER", &self.identifier);
        if let Some(file) = meta.file() {
            append(&mut entry, "CODE_FILE", file);
        }
        if let Some(line) = meta.line() {
            append(&mut entry, "CODE_LINE", line.to_string());
        }
        for (name, value) in &fields.others {
            append(&mut entry, &field_name(name), value);
        }
        // A message the socket refuses (larger than a datagram may be, or
        // the queue full) still reaches the journal, as a line of the stream.
        if self.socket.send(&entry).is_err() {
            (self.fallback)(&message);
        }
    }
}

/// An event's message and its other fields, as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Fields {
    /// What the plain line says: the message, then `name=value` per field.
    fn line(&self) -> String {
        let mut line = self.message.clone();
        for (name, value) in &self.others {
            let _ = write!(line, " {name}={value}");
        }
        line
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.others.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.others.push((field.name(), format!("{value:?}")));
        }
    }
}

/// A journal field's name for an event's field: `ABNIX_` and the name in
/// capitals, anything but letters and digits as `_` (journald accepts
/// only `A-Z`, `0-9` and `_`).
fn field_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("ABNIX_{name}")
}

/// One field in the native protocol: `NAME=value\n`, or, for a value with a
/// newline, the name, a newline, the value's length (64 bits, little
/// endian), the value and a newline.
fn append(entry: &mut Vec<u8>, name: &str, value: impl AsRef<[u8]>) {
    let value = value.as_ref();
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_stream_is("25:1234", 25, 1234));
        assert!(!journal_stream_is("25:1234", 25, 1235), "another inode");
        assert!(!journal_stream_is("26:1234", 25, 1234), "another device");
        for malformed in ["", "25", "25:", ":1234", "25:1234:1", "x:1234", "25:-1"] {
            assert!(!journal_stream_is(malformed, 25, 1234), "{malformed:?}");
        }
    }

    /// Decodes one datagram of the native protocol.
    fn decode(mut data: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while !data.is_empty() {
            let end = data.iter().position(|&b| b == b'=' || b == b'\n').unwrap();
            let name = String::from_utf8(data[..end].to_vec()).unwrap();
            let value;
            if data[end] == b'=' {
                let rest = &data[end + 1..];
                let newline = rest.iter().position(|&b| b == b'\n').unwrap();
                value = rest[..newline].to_vec();
                data = &rest[newline + 1..];
            } else {
                let rest = &data[end + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                value = rest[8..8 + len].to_vec();
                assert_eq!(rest[8 + len], b'\n');
                data = &rest[8 + len + 1..];
            }
            fields.push((name, String::from_utf8(value).unwrap()));
        }
        fields
    }

    fn field<'a>(entry: &'a [(String, String)], name: &str) -> Option<&'a str> {
        entry
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn events_reach_the_journal_with_their_priority_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::connect(&path).unwrap();
        let subscriber =
            tracing_subscriber::registry().with(layer.with_filter(EnvFilter::new("debug")));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("cannot write slot b");
            tracing::warn!(version = 4u64, slot = %"b", "ignored version 4: it failed before");
            tracing::info!("two\nlines");
            tracing::debug!(error_kind = "timeout", "retrying");
            tracing::trace!("not sent: below the filter");
        });
        journal.set_nonblocking(true).unwrap();
        let mut entries = Vec::new();
        let mut buf = vec![0; 65536];
        while let Ok(n) = journal.recv(&mut buf) {
            entries.push(decode(&buf[..n]));
        }
        assert_eq!(entries.len(), 4, "{entries:?}");
        let priorities: Vec<_> = entries
            .iter()
            .map(|e| field(e, "PRIORITY").unwrap())
            .collect();
        assert_eq!(priorities, ["3", "4", "6", "7"]);

        let warning = &entries[1];
        assert_eq!(
            field(warning, "MESSAGE"),
            Some("ignored version 4: it failed before version=4 slot=b")
        );
        assert_eq!(field(warning, "ABNIX_VERSION"), Some("4"));
        assert_eq!(field(warning, "ABNIX_SLOT"), Some("b"));
        assert!(field(warning, "SYSLOG_IDENTIFIER").is_some_and(|id| !id.is_empty()));
        assert_eq!(field(warning, "CODE_FILE"), Some(file!()));
        assert_eq!(field(&entries[2], "MESSAGE"), Some("two\nlines"));
        assert_eq!(field(&entries[3], "ABNIX_ERROR_KIND"), Some("timeout"));
    }

    /// A journal that reads nothing fills its queue: the events after that
    /// go to the fallback instead of blocking the program (a blocking send
    /// waits here for good).
    #[test]
    fn a_journal_that_does_not_read_does_not_block() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static FELL_BACK: AtomicUsize = AtomicUsize::new(0);
        fn count(_: &str) {
            FELL_BACK.fetch_add(1, Ordering::SeqCst);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let _journal = UnixDatagram::bind(&path).unwrap();
        let mut layer = JournalLayer::connect(&path).unwrap();
        layer.fallback = count;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                let big = "x".repeat(16 << 10);
                for _ in 0..200 {
                    tracing::info!("{big}");
                }
            });
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("logging blocked on a journal that does not read");
        assert!(FELL_BACK.load(Ordering::SeqCst) > 0);
    }
}
