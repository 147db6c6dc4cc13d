//! One connection's byte stream, as hyper sees it: the socket (or TLS
//! stream) wrapped to
//! - count the bytes read, so the header-read clock starts at a request's
//!   first byte ([`HeadTimer`]);
//! - stop a response that the client does not take: a write that makes no
//!   progress for the write timeout fails the connection;
//! - note, per request head, framing that hyper accepts but this server
//!   refuses ([`HeadScan`]): duplicate `Content-Length`, and
//!   `Transfer-Encoding` together with `Content-Length`.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection's parts share: the reader's byte count, the framing
/// notes of request heads not yet handled, and why the connection timed
/// out (for the log).
#[derive(Debug, Default)]
pub(crate) struct ConnShared {
    bytes_read: AtomicU64,
    framing: Mutex<VecDeque<Framing>>,
    timed_out: AtomicU8,
}

/// Why the header-read timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timeout {
    /// No byte of a next request within the idle (keep-alive) timeout.
    Idle,
    /// A request head begun and not complete within the header timeout.
    Head,
}

impl ConnShared {
    /// The framing note of the next request head (in arrival order).
    pub(crate) fn next_framing(&self) -> Framing {
        self.framing
            .lock()
            .map(|mut q| q.pop_front().unwrap_or_default())
            .unwrap_or_default()
    }

    pub(crate) fn timed_out(&self) -> Option<Timeout> {
        match self.timed_out.load(Ordering::Relaxed) {
            1 => Some(Timeout::Idle),
            2 => Some(Timeout::Head),
            _ => None,
        }
    }
}

/// Framing of one request head that hyper tolerates and this server
/// refuses with 400 (RFC 9112 6.3: a message with both is a smuggling
/// attempt or a broken client; duplicate lengths are refused even when
/// they agree).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Framing {
    /// More than one `Content-Length` field, or a list in one.
    pub duplicate_length: bool,
    /// `Transfer-Encoding` and `Content-Length` together.
    pub length_and_encoding: bool,
}

/// The stream hyper reads and writes.
pub(crate) struct Guarded<S> {
    inner: S,
    shared: Arc<ConnShared>,
    scan: HeadScan,
    write_timeout: Duration,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Guarded<S> {
    pub(crate) fn new(
        inner: S,
        shared: Arc<ConnShared>,
        write_timeout: Duration,
        max_head: usize,
    ) -> Self {
        Guarded {
            inner,
            shared,
            scan: HeadScan::new(max_head),
            write_timeout,
            stall: None,
        }
    }

    /// Pending write: fails once no progress was made for the write
    /// timeout.
    fn poll_stall<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took no response bytes for {} s",
                    timeout.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        r: Poll<io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_stall(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.shared
                .bytes_read
                .fetch_add(new.len() as u64, Ordering::Relaxed);
            let mut notes = Vec::new();
            this.scan.feed(new, &mut |f| notes.push(f));
            if !notes.is_empty()
                && let Ok(mut q) = this.shared.framing.lock()
            {
                q.extend(notes);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        this.progressed(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progressed(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.progressed(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progressed(r, cx)
    }
}

// ---------------------------------------------------------------------------
// Header-read and idle timeouts
// ---------------------------------------------------------------------------

/// The timer of hyper's `header_read_timeout`, one per connection.
///
/// hyper starts its header-read timer as soon as it waits for a request
/// head, which on a keep-alive connection is right after the previous
/// response: used as is, the header timeout would also be the idle
/// timeout. This timer splits the two. The wait hyper asks for runs in two
/// phases:
/// 1. until the next byte arrives: the idle timeout (the header timeout on
///    a new connection, which must start its first request promptly);
/// 2. from that first byte: the header timeout, however slowly the rest
///    trickles in.
///
/// hyper polls the timer each time a read leaves the head incomplete, so
/// the switch happens at the first byte.
#[derive(Clone)]
pub(crate) struct HeadTimer {
    shared: Arc<ConnShared>,
    head: Duration,
    idle: Duration,
    first: Arc<AtomicBool>,
}

impl HeadTimer {
    pub(crate) fn new(shared: Arc<ConnShared>, head: Duration, idle: Duration) -> Self {
        HeadTimer {
            shared,
            head,
            idle,
            first: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PlainSleep(Box::pin(tokio::time::sleep(duration))))
    }

    /// hyper's server asks for a sleep only to time a request head.
    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let first = self.first.swap(false, Ordering::Relaxed);
        let wait = if first { self.head } else { self.idle };
        Box::pin(HeadSleep {
            shared: self.shared.clone(),
            seen: self.shared.bytes_read.load(Ordering::Relaxed),
            head: self.head,
            begun: false,
            sleep: Box::pin(tokio::time::sleep(wait)),
        })
    }
}

struct PlainSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PlainSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PlainSleep {}

struct HeadSleep {
    shared: Arc<ConnShared>,
    /// Bytes read when the wait began.
    seen: u64,
    head: Duration,
    /// A byte of the head has arrived: the header timeout runs.
    begun: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.begun && self.shared.bytes_read.load(Ordering::Relaxed) > self.seen {
            self.begun = true;
            let deadline = tokio::time::Instant::now() + self.head;
            self.sleep.as_mut().reset(deadline);
        }
        ready!(self.sleep.as_mut().poll(cx));
        let why = if self.begun { 2 } else { 1 };
        self.shared.timed_out.store(why, Ordering::Relaxed);
        Poll::Ready(())
    }
}

impl hyper::rt::Sleep for HeadSleep {}

// ---------------------------------------------------------------------------
// Framing notes
// ---------------------------------------------------------------------------

/// Follows the request stream just far enough to find each head and skip
/// its `Content-Length` body, noting framing hyper accepts but this server
/// refuses. It gives up (and notes nothing more) where the stream stops
/// being simple: a chunked body (this server never reads one: 411 or 400,
/// and the connection closes) or a head beyond the limit (hyper answers
/// 431 and closes).
#[derive(Debug)]
pub(crate) struct HeadScan {
    state: ScanState,
    limit: usize,
}

#[derive(Debug)]
enum ScanState {
    Head(Vec<u8>),
    Body(u64),
    Off,
}

impl HeadScan {
    pub(crate) fn new(max_head: usize) -> Self {
        HeadScan {
            state: ScanState::Head(Vec::new()),
            limit: max_head.saturating_add(1024),
        }
    }

    pub(crate) fn feed(&mut self, mut data: &[u8], note: &mut dyn FnMut(Framing)) {
        while !data.is_empty() {
            match &mut self.state {
                ScanState::Off => return,
                ScanState::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = ScanState::Head(Vec::new());
                    }
                }
                ScanState::Head(buf) => {
                    if buf.is_empty() {
                        // Empty lines before a request line are ignored
                        // (RFC 9112 2.2), by hyper too.
                        let skip = data
                            .iter()
                            .position(|b| *b != b'\r' && *b != b'\n')
                            .unwrap_or(data.len());
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let from = buf.len().saturating_sub(2);
                    buf.extend_from_slice(data);
                    let Some(end) = head_end(buf, from) else {
                        if buf.len() > self.limit {
                            self.state = ScanState::Off;
                        }
                        return;
                    };
                    let rest = buf.len() - end;
                    let (framing, next) = inspect(&buf[..end]);
                    note(framing);
                    data = &data[data.len() - rest..];
                    self.state = next;
                }
            }
        }
    }
}

/// The end (exclusive) of a head in `buf`: after the empty line (`\n\n`
/// or `\n\r\n`), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

/// The framing note of one head and what follows it.
fn inspect(head: &[u8]) -> (Framing, ScanState) {
    let mut lengths = 0usize;
    let mut list = false;
    let mut length = None;
    let mut encoded = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let value = String::from_utf8_lossy(value);
            list |= value.contains(',');
            length = value.trim().parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
        }
    }
    let framing = Framing {
        duplicate_length: lengths > 1 || list,
        length_and_encoding: encoded && lengths > 0,
    };
    let next = match (encoded, length) {
        (true, _) => ScanState::Off,
        (false, Some(0)) => ScanState::Head(Vec::new()),
        (false, Some(n)) if lengths == 1 => ScanState::Body(n),
        // Unreadable lengths: hyper refuses the request and closes.
        (false, Some(_)) => ScanState::Off,
        (false, None) if lengths > 0 => ScanState::Off,
        (false, None) => ScanState::Head(Vec::new()),
    };
    (framing, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(chunks: &[&[u8]]) -> Vec<Framing> {
        let mut scan = HeadScan::new(16 * 1024);
        let mut out = Vec::new();
        for c in chunks {
            scan.feed(c, &mut |f| out.push(f));
        }
        out
    }

    const OK: Framing = Framing {
        duplicate_length: false,
        length_and_encoding: false,
    };

    #[test]
    fn pipelined_heads_and_bodies_are_followed() {
        let two =
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(notes(&[two]), vec![OK, OK]);
        // The same, one byte at a time.
        let bytes: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(notes(&bytes), vec![OK, OK]);
        // A body that looks like a head is skipped.
        let tricky = b"POST /a HTTP/1.1\r\nContent-Length: 39\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\n\r\n";
        assert_eq!(notes(&[tricky]), vec![OK]);
        // Bare LF line ends, leading empty lines.
        assert_eq!(
            notes(&[b"\r\nGET / HTTP/1.1\nHost: x\n\nGET / HTTP/1.1\n\n"]),
            vec![OK, OK]
        );
    }

    #[test]
    fn refused_framing_is_noted() {
        let dup = notes(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"]);
        assert!(dup[0].duplicate_length && !dup[0].length_and_encoding);
        let list = notes(&[b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"]);
        assert!(list[0].duplicate_length);
        let both = notes(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(both.len(), 1, "the scan stops at a chunked body");
        assert!(both[0].length_and_encoding && !both[0].duplicate_length);
    }

    #[test]
    fn a_write_without_progress_fails_after_the_write_timeout() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A peer that never reads: 64 bytes fit, then writes wait.
            let (a, _peer) = tokio::io::duplex(64);
            let mut g = Guarded::new(
                a,
                Arc::new(ConnShared::default()),
                Duration::from_millis(200),
                1024,
            );
            let t = tokio::time::Instant::now();
            let e = g.write_all(&[0u8; 1024]).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
            assert!(t.elapsed() >= Duration::from_millis(200));
        });
    }

    #[test]
    fn an_endless_head_stops_the_scan() {
        let mut scan = HeadScan::new(100);
        let mut n = 0;
        scan.feed(b"GET / HTTP/1.1\r\nX: ", &mut |_| n += 1);
        scan.feed(&[b'a'; 2000], &mut |_| n += 1);
        assert!(matches!(scan.state, ScanState::Off));
        scan.feed(b"\r\n\r\n", &mut |_| n += 1);
        assert_eq!(n, 0);
    }
}
