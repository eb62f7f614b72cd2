//! An HTTP/1.1 proxy that records requests and injects faults.
//!
//! It parses just enough HTTP to see each request's line and headers. It
//! forwards requests byte for byte, so SigV4 signatures stay valid (the Host
//! header and everything signed arrive unchanged), with one exception: it
//! sets `Connection: close` upstream. One request per connection means the
//! response ends where the upstream connection ends, so responses need no
//! parsing beyond their head. `Connection` is a hop-by-hop header that
//! clients do not sign.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// A stalled response is held at most this long.
const MAX_STALL: Duration = Duration::from_secs(120);

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/abnix-test/k?uploads`.
    pub path: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// Which GET responses a cut applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutWhich {
    Next,
    /// 1-based, counted since the proxy started.
    Nth(usize),
    Every,
}

/// Cuts GET response bodies.
#[derive(Debug, Clone, Copy)]
struct BodyCut {
    which: CutWhich,
    after_bytes: u64,
    /// Hold the connection open instead of closing it.
    stall: bool,
}

/// Slows GET response bodies down to a trickle: after `after_bytes` at full
/// speed, one byte every `interval`.
#[derive(Debug, Clone, Copy)]
struct Trickle {
    after_bytes: u64,
    interval: Duration,
}

/// An error response the proxy answers itself, instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedError {
    /// `500 InternalError`: the server failed.
    Internal,
    /// `503 SlowDown`: S3's answer to a client sending too many requests.
    SlowDown,
}

impl InjectedError {
    fn status_line(self) -> &'static str {
        match self {
            InjectedError::Internal => "500 Internal Server Error",
            InjectedError::SlowDown => "503 Slow Down",
        }
    }

    fn code(self) -> &'static str {
        match self {
            InjectedError::Internal => "InternalError",
            InjectedError::SlowDown => "SlowDown",
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    cut: Option<BodyCut>,
    /// Answer every second request with this error.
    fail_every_second: Option<InjectedError>,
    fail_all: bool,
    /// Requests seen since `fail_every_second` was turned on.
    seen_while_failing: usize,
    latency: Duration,
    ignore_ranges: bool,
    trickle: Option<Trickle>,
    hold_puts: bool,
}

struct State {
    upstream: SocketAddr,
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Faults>,
    injected_errors: AtomicUsize,
    cuts: AtomicUsize,
    /// GETs seen since start (not reset by `clear_requests`).
    gets: AtomicUsize,
    /// Response body bytes relayed to clients since `clear_requests`.
    body_bytes: AtomicU64,
    /// Requests between their head's arrival and the end of their
    /// response, now and at most since `clear_requests`.
    open_requests: AtomicUsize,
    max_open_requests: AtomicUsize,
    stop: AtomicBool,
}

/// What to do with one request, decided when it arrives.
struct Plan {
    fail: Option<InjectedError>,
    cut: Option<BodyCut>,
    latency: Duration,
    strip_range: bool,
    trickle: Option<Trickle>,
    /// Never answer: hold the request until the client gives up.
    hold: bool,
}

/// A proxy on 127.0.0.1 in front of `upstream`. Faults are set at runtime
/// and apply to requests that arrive afterwards.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            upstream,
            requests: Mutex::default(),
            faults: Mutex::default(),
            injected_errors: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
            body_bytes: AtomicU64::new(0),
            open_requests: AtomicUsize::new(0),
            max_open_requests: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let accept_state = state.clone();
        let accept_thread = thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let state = accept_state.clone();
                // Errors end the connection, which is what a client sees
                // from a flaky network anyway.
                thread::spawn(move || {
                    let _ = serve(client, &state);
                });
            }
        });
        FaultProxy {
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far, zeroes [`FaultProxy::body_bytes`]
    /// and restarts [`FaultProxy::max_open_requests`] from the requests open
    /// now (GET numbering goes on).
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
        self.state.body_bytes.store(0, Ordering::SeqCst);
        let open = self.state.open_requests.load(Ordering::SeqCst);
        self.state.max_open_requests.store(open, Ordering::SeqCst);
    }

    /// The most requests open at once (from the arrival of a request's head
    /// until its response ended) since the record was last cleared: how
    /// many a client had in flight. With [`FaultProxy::set_latency`], a
    /// client's parallel requests surely overlap here.
    pub fn max_open_requests(&self) -> usize {
        self.state.max_open_requests.load(Ordering::SeqCst)
    }

    /// Response body bytes relayed to clients since the record was last
    /// cleared: what the clients downloaded.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    /// Cuts the body of the next GET response after `after_bytes` bytes by
    /// closing both connections. Once.
    pub fn cut_next_get(&self, after_bytes: u64) {
        self.set_cut(CutWhich::Next, after_bytes, false);
    }

    /// Cuts the body of every GET response after `after_bytes` bytes, until
    /// the faults are cleared.
    pub fn cut_every_get(&self, after_bytes: u64) {
        self.set_cut(CutWhich::Every, after_bytes, false);
    }

    /// Cuts the body of the `n`-th GET (1-based, counted since the proxy
    /// started, answered or not) after `after_bytes` bytes.
    pub fn cut_nth_get(&self, n: usize, after_bytes: u64) {
        self.set_cut(CutWhich::Nth(n), after_bytes, false);
    }

    /// Stops forwarding the next GET response's body after `after_bytes`
    /// bytes and holds the connection open until the client gives up.
    pub fn stall_next_get(&self, after_bytes: u64) {
        self.set_cut(CutWhich::Next, after_bytes, true);
    }

    fn set_cut(&self, which: CutWhich, after_bytes: u64, stall: bool) {
        self.state.faults.lock().unwrap().cut = Some(BodyCut {
            which,
            after_bytes,
            stall,
        });
    }

    /// While on, every second request (the 2nd, 4th, … since turned on) is
    /// answered `500 InternalError` by the proxy itself, not forwarded.
    pub fn fail_every_second_request(&self, on: bool) {
        self.every_second_request_fails_with(on.then_some(InjectedError::Internal));
    }

    /// Every second request (the 2nd, 4th, … from now) is answered with
    /// `error` by the proxy itself, not forwarded; `None` turns it off.
    pub fn every_second_request_fails_with(&self, error: Option<InjectedError>) {
        let mut faults = self.state.faults.lock().unwrap();
        faults.fail_every_second = error;
        faults.seen_while_failing = 0;
    }

    /// While on, every request is answered `500 InternalError` by the proxy
    /// itself: a server that stays broken through every retry.
    pub fn fail_every_request(&self, on: bool) {
        self.state.faults.lock().unwrap().fail_all = on;
    }

    /// While on, requests are forwarded without their `Range` header, so the
    /// server answers `200` with the whole object: a server (or a cache in
    /// between) that does not serve ranges. For unsigned requests only: the
    /// header is signed, so a signed request would fail its signature.
    pub fn ignore_ranges(&self, on: bool) {
        self.state.faults.lock().unwrap().ignore_ranges = on;
    }

    /// Every GET response body from now on: `after_bytes` at full speed,
    /// then one byte every `interval`, each soon enough to keep a client's
    /// read timeout at bay: a server holding a download open forever (slow
    /// retrieval).
    pub fn trickle_every_get(&self, after_bytes: u64, interval: Duration) {
        self.state.faults.lock().unwrap().trickle = Some(Trickle {
            after_bytes,
            interval,
        });
    }

    /// While on, PUT requests are never answered: the proxy holds each
    /// until the client gives up (a bucket that stalls writes).
    pub fn hold_every_put(&self, on: bool) {
        self.state.faults.lock().unwrap().hold_puts = on;
    }

    /// Delay before each request is forwarded (or failed).
    pub fn set_latency(&self, latency: Duration) {
        self.state.faults.lock().unwrap().latency = latency;
    }

    /// Removes every fault (recorded requests stay).
    pub fn clear_faults(&self) {
        *self.state.faults.lock().unwrap() = Faults::default();
    }

    /// Error responses the proxy answered itself.
    pub fn injected_errors(&self) -> usize {
        self.state.injected_errors.load(Ordering::SeqCst)
    }

    /// Response bodies cut or stalled.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

/// A request counted as open until closed or dropped.
struct OpenRequest<'a> {
    state: &'a State,
    closed: bool,
}

impl OpenRequest<'_> {
    fn close(&mut self) {
        if !std::mem::replace(&mut self.closed, true) {
            self.state.open_requests.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for OpenRequest<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

impl State {
    fn open_request(&self) -> OpenRequest<'_> {
        let open = self.open_requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open_requests.fetch_max(open, Ordering::SeqCst);
        OpenRequest {
            state: self,
            closed: false,
        }
    }

    /// Records the request and decides its fate.
    fn plan(&self, request: RecordedRequest) -> Plan {
        let mut requests = self.requests.lock().unwrap();
        let mut faults = self.faults.lock().unwrap();
        let is_get = request.method == "GET";
        let hold = faults.hold_puts && request.method == "PUT";
        requests.push(request);
        let get_number = if is_get {
            self.gets.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            0
        };

        let fail = if faults.fail_all {
            Some(InjectedError::Internal)
        } else {
            faults.fail_every_second.filter(|_| {
                faults.seen_while_failing += 1;
                faults.seen_while_failing.is_multiple_of(2)
            })
        };
        let cut = match faults.cut {
            Some(cut) if is_get && fail.is_none() => match cut.which {
                CutWhich::Every => Some(cut),
                CutWhich::Nth(n) if n != get_number => None,
                CutWhich::Next | CutWhich::Nth(_) => faults.cut.take(),
            },
            _ => None,
        };
        Plan {
            fail,
            cut,
            latency: faults.latency,
            strip_range: faults.ignore_ranges,
            trickle: faults.trickle.filter(|_| is_get),
            hold,
        }
    }
}

/// Handles one client connection: one request, one response.
fn serve(client: TcpStream, state: &State) -> io::Result<()> {
    let mut client_reader = BufReader::new(client.try_clone()?);
    let Some(head) = read_head(&mut client_reader)? else {
        return Ok(());
    };
    let request = parse_request(&head)?;
    let mut open = state.open_request();
    let method = request.method.clone();
    let plan = state.plan(request);
    thread::sleep(plan.latency);

    if plan.hold {
        // Reads (and drops) what the client sends until it gives up.
        client.set_read_timeout(Some(MAX_STALL))?;
        let _ = io::copy(&mut client_reader, &mut io::sink());
        return Ok(());
    }
    let mut client_writer = client;
    if let Some(error) = plan.fail {
        state.injected_errors.fetch_add(1, Ordering::SeqCst);
        return answer_error(error, &mut client_writer, &mut client_reader, &method);
    }

    let mut upstream = TcpStream::connect(state.upstream)?;
    let head = match plan.strip_range {
        true => without_header(&head, "range"),
        false => head,
    };
    upstream.write_all(&with_connection_close(&head))?;
    // Body bytes the reader already pulled in with the head.
    let buffered = client_reader.buffer().to_vec();
    client_reader.consume(buffered.len());
    upstream.write_all(&buffered)?;

    // The rest of the request body, until the client closes.
    let client_gone = Arc::new(AtomicBool::new(false));
    let pump = {
        let mut from_client = client_reader.into_inner();
        let mut to_upstream = upstream.try_clone()?;
        let client_gone = client_gone.clone();
        thread::spawn(move || {
            let _ = io::copy(&mut from_client, &mut to_upstream);
            let _ = to_upstream.shutdown(Shutdown::Write);
            client_gone.store(true, Ordering::SeqCst);
        })
    };

    let mut upstream_reader = BufReader::new(upstream);
    let result = relay_response(
        &mut upstream_reader,
        &mut client_writer,
        (plan.cut, plan.trickle),
        &state.body_bytes,
        &mut open,
    );
    if let Ok(true) = result {
        state.cuts.fetch_add(1, Ordering::SeqCst);
        if plan.cut.is_some_and(|cut| cut.stall) {
            let deadline = Instant::now() + MAX_STALL;
            while !client_gone.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    let _ = client_writer.shutdown(Shutdown::Both);
    let _ = upstream_reader.get_ref().shutdown(Shutdown::Both);
    let _ = pump.join();
    result.map(|_| ())
}

/// Copies the response head and body to the client, stopping after
/// `cut.after_bytes` body bytes or slowed to a trickle, and adds the body
/// bytes sent to `relayed`; true if it stopped early. Closes `open` before
/// the client can have the whole body (by its `Content-Length`), so that a
/// client's next request never overlaps this one at the proxy unless it
/// did at the client.
fn relay_response(
    upstream: &mut BufReader<TcpStream>,
    client: &mut TcpStream,
    (cut, trickle): (Option<BodyCut>, Option<Trickle>),
    relayed: &AtomicU64,
    open: &mut OpenRequest,
) -> io::Result<bool> {
    let Some(head) = read_head(upstream)? else {
        return Ok(false);
    };
    let body_len = content_length(&head);
    if body_len == Some(0) {
        open.close();
    }
    client.write_all(&head)?;
    let mut left = cut.map_or(u64::MAX, |cut| cut.after_bytes);
    let mut sent = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        let take = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        if body_len.is_some_and(|len| sent + take as u64 >= len) {
            open.close();
        }
        match trickle {
            Some(trickle) => {
                for &byte in &buf[..take] {
                    if sent >= trickle.after_bytes {
                        thread::sleep(trickle.interval);
                    }
                    client.write_all(&[byte])?;
                    sent += 1;
                }
            }
            None => {
                client.write_all(&buf[..take])?;
                sent += take as u64;
            }
        }
        relayed.fetch_add(take as u64, Ordering::SeqCst);
        left -= take as u64;
        if take < n || (left == 0 && cut.is_some()) {
            return Ok(true);
        }
    }
}

/// The `Content-Length` of a response head, if it has one.
fn content_length(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok()?;
    parse_headers(text.lines().skip(1))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
}

/// Answers `500 InternalError` with an S3 error document, then drains what
/// the client still sends so closing does not reset the connection before
/// the client has read the answer.
fn answer_error(
    error: InjectedError,
    client: &mut TcpStream,
    client_reader: &mut BufReader<TcpStream>,
    method: &str,
) -> io::Result<()> {
    let body = if method == "HEAD" {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <Error><Code>{}</Code><Message>injected by FaultProxy</Message></Error>",
            error.code()
        )
    };
    write!(
        client,
        "HTTP/1.1 {}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        error.status_line(),
        body.len()
    )?;
    client.shutdown(Shutdown::Write)?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let _ = io::copy(client_reader, &mut io::sink());
    Ok(())
}

/// Reads up to and including the blank line that ends an HTTP head; `None`
/// if the connection closed before any byte.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        if reader.read_until(b'\n', &mut head)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated HTTP head",
                ))
            };
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "HTTP head too long",
            ));
        }
        if &head[before..] == b"\r\n" || &head[before..] == b"\n" {
            return Ok(Some(head));
        }
    }
}

fn parse_request(head: &[u8]) -> io::Result<RecordedRequest> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let text = std::str::from_utf8(head).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = text.lines();
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path)) = (request_line.next(), request_line.next()) else {
        return Err(invalid("malformed request line"));
    };
    Ok(RecordedRequest {
        method: method.to_string(),
        path: path.to_string(),
        headers: parse_headers(lines).collect(),
    })
}

/// (name, value) of each header line, up to the blank line.
fn parse_headers<'a>(
    lines: impl Iterator<Item = &'a str> + 'a,
) -> impl Iterator<Item = (String, String)> + 'a {
    lines
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
}

/// The request head with any `Connection` header replaced by
/// `Connection: close`; every other line is kept byte for byte.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + 19);
    let mut lines = head.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let is_last = lines.peek().is_none();
        if is_last {
            out.extend_from_slice(b"Connection: close\r\n");
            out.extend_from_slice(line);
        } else if !line.to_ascii_lowercase().starts_with(b"connection:") {
            out.extend_from_slice(line);
        }
    }
    out
}

/// The request head without any header called `name` (lowercase).
fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let prefix = format!("{name}:");
    head.split_inclusive(|&b| b == b'\n')
        .filter(|line| !line.to_ascii_lowercase().starts_with(prefix.as_bytes()))
        .flatten()
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_parsed() {
        let head = b"GET /b/k?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\nRange: bytes=5-\r\n\r\n";
        let request = parse_request(head).unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/b/k?x=1");
        assert_eq!(request.path_only(), "/b/k");
        assert_eq!(request.range(), Some("bytes=5-"));
        assert_eq!(request.header("HOST"), Some("127.0.0.1:9"));
    }

    #[test]
    fn connection_header_is_replaced_and_the_rest_kept() {
        let head =
            b"PUT /b/k HTTP/1.1\r\nHost: h\r\nconnection: keep-alive\r\nx-amz-date: d\r\n\r\n";
        assert_eq!(
            with_connection_close(head),
            b"PUT /b/k HTTP/1.1\r\nHost: h\r\nx-amz-date: d\r\nConnection: close\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn a_header_is_dropped_and_the_rest_kept() {
        let head = b"GET /b/k HTTP/1.1\r\nHost: h\r\nRange: bytes=5-9\r\nx-a: 1\r\n\r\n";
        assert_eq!(
            without_header(head, "range"),
            b"GET /b/k HTTP/1.1\r\nHost: h\r\nx-a: 1\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn the_content_length_of_a_response() {
        let head = b"HTTP/1.1 206 Partial Content\r\ncontent-length: 42\r\n\r\n";
        assert_eq!(content_length(head), Some(42));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }

    #[test]
    fn heads_end_at_the_blank_line() {
        let mut input = &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"[..];
        let head = read_head(&mut input).unwrap().unwrap();
        assert_eq!(
            head,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n".to_vec()
        );
        assert_eq!(input, b"abc");
        assert!(read_head(&mut &b""[..]).unwrap().is_none());
        assert!(read_head(&mut &b"HTTP/1.1 200"[..]).is_err());
    }
}
