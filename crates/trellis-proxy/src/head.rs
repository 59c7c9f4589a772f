//! Header-read deadlines: how long a client may take to send a request's head, so a
//! client trickling bytes (a slow loris) cannot hold a connection however slowly it
//! sends.
//!
//! The clock of a connection's first head starts when the connection is accepted (or a
//! `CONNECT` tunnel opens), so it covers an mTLS handshake and protocol detection too.
//! Later heads' clocks start at their first byte: an idle keep-alive connection is the
//! idle timeout's business, not this one's. What "the head" is depends on the protocol:
//!
//! - HTTP/1: from the first byte of a request until hyper hands the parsed request to
//!   the service (bytes read while a request is in flight are its body);
//! - HTTP/2: the connection preface with the client's first frame (SETTINGS), then every
//!   frame header and every header block (HEADERS or PUSH_PROMISE with its
//!   CONTINUATIONs), found by following frame boundaries; DATA payloads are not timed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// When the head in progress on one connection started, if one is.
#[derive(Debug)]
pub struct HeadClock {
    origin: Instant,
    /// Milliseconds since `origin`, plus one, when the head in progress started; 0 when
    /// none is.
    started: AtomicU64,
    timeout: Duration,
}

impl HeadClock {
    /// A clock whose first head started at `since` (the connection's accept) and may
    /// take `timeout`.
    pub fn new(since: Instant, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            origin: since,
            started: AtomicU64::new(1),
            timeout,
        })
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// A head begins now, unless one is already in progress.
    pub fn start(&self) {
        let now = self.now_ms();
        let _ = self
            .started
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The head in progress is complete.
    pub fn finish(&self) {
        self.started.store(0, Ordering::Relaxed);
    }

    /// Whether a head is in progress.
    pub fn pending(&self) -> bool {
        self.started.load(Ordering::Relaxed) != 0
    }

    /// Resolves once a head has been in progress for the timeout. While none is, looks
    /// again every timeout: a head starting in between gets its full time or more,
    /// never less.
    pub async fn expired(&self) {
        loop {
            let started = self.started.load(Ordering::Relaxed);
            let wait = if started == 0 {
                self.timeout
            } else {
                let elapsed = Duration::from_millis(self.now_ms().saturating_sub(started));
                if elapsed >= self.timeout {
                    return;
                }
                self.timeout - elapsed
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// What a [`HeadIo`] watches its bytes for.
#[derive(Debug)]
pub enum Heads {
    /// HTTP/1: a byte read while no request is in flight (`active` is zero) begins a
    /// head; the service finishes it when called.
    Http1 { active: Arc<AtomicUsize> },
    /// HTTP/2: heads found by following the frames.
    Http2(FrameScanner),
}

pin_project_lite::pin_project! {
    /// A stream whose reads move a [`HeadClock`]: heads start and (on HTTP/2) finish as
    /// their bytes arrive.
    pub struct HeadIo<T> {
        #[pin]
        inner: T,
        clock: Arc<HeadClock>,
        heads: Heads,
    }
}

impl<T> HeadIo<T> {
    pub fn new(inner: T, clock: Arc<HeadClock>, heads: Heads) -> Self {
        Self {
            inner,
            clock,
            heads,
        }
    }
}

impl<T: AsyncRead> AsyncRead for HeadIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            match this.heads {
                Heads::Http1 { active } => {
                    if active.load(Ordering::Relaxed) == 0 {
                        this.clock.start();
                    }
                }
                Heads::Http2(scanner) => scanner.feed(read, this.clock),
            }
        }
        res
    }
}

crate::io::write_through!(HeadIo);

/// Client connection preface (RFC 9113 section 3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Follows HTTP/2 frame boundaries in the bytes a client sends, to tell the clock when
/// a head (the preface and first frame, a frame header, a header block) starts and
/// ends. It only counts bytes; h2 itself validates them.
#[derive(Debug)]
pub struct FrameScanner {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    /// The frame being read is the client's first (its SETTINGS), part of the opening.
    first_frame: bool,
    /// The frame being read belongs to a header block.
    in_block: bool,
    /// The frame being read ends its header block.
    ends_block: bool,
}

impl Default for FrameScanner {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            first_frame: true,
            in_block: false,
            ends_block: false,
        }
    }
}

impl FrameScanner {
    /// Accounts for `bytes`, the next ones the client sent.
    pub fn feed(&mut self, mut bytes: &[u8], clock: &HeadClock) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 {
                    self.frame_read(clock);
                }
            } else {
                if self.header_len == 0 {
                    clock.start();
                }
                let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == FRAME_HEADER_LEN {
                    self.header_read(clock);
                }
            }
        }
    }

    fn header_read(&mut self, clock: &HeadClock) {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        self.header_len = 0;
        self.payload_left = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        let block =
            matches!(kind, HEADERS | PUSH_PROMISE) || (self.in_block && kind == CONTINUATION);
        self.in_block = block;
        self.ends_block = block && flags & END_HEADERS != 0;
        if !block && !self.first_frame {
            // A DATA frame's payload, say, may take as long as flow control makes it.
            clock.finish();
        }
        if self.payload_left == 0 {
            self.frame_read(clock);
        }
    }

    fn frame_read(&mut self, clock: &HeadClock) {
        self.first_frame = false;
        if !self.in_block || self.ends_block {
            self.in_block = false;
            clock.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.resize(FRAME_HEADER_LEN + len, 0xab);
        f
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_is_timed_from_the_accept() {
        let clock = HeadClock::new(Instant::now(), Duration::from_secs(2));
        let started = Instant::now();
        clock.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_between_looks_gets_its_full_time() {
        let clock = HeadClock::new(Instant::now(), Duration::from_secs(2));
        clock.finish();
        tokio::time::advance(Duration::from_millis(1500)).await;
        clock.start();
        let started = Instant::now();
        clock.expired().await;
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    /// Byte by byte or all at once, the scanner says the same about each step of an
    /// HTTP/2 conversation.
    #[test]
    fn follows_heads_through_the_frames() {
        let settings = frame(0x4, 0, 12);
        let headers_open = frame(HEADERS, 0, 20);
        let continuation_end = frame(CONTINUATION, END_HEADERS, 5);
        let data = frame(0x0, 0, 100);
        let headers_whole = frame(HEADERS, END_HEADERS | 0x1, 8);
        let preface = [0u8; PREFACE_LEN];
        // (bytes, is a head pending after them)
        let steps: &[(&[u8], bool)] = &[
            (&preface, true),
            (&settings[..FRAME_HEADER_LEN], true),
            (&settings[FRAME_HEADER_LEN..], false),
            (&headers_open, true),
            (&continuation_end[..3], true),
            (&continuation_end[3..], false),
            (&data[..FRAME_HEADER_LEN + 10], false),
            (&data[FRAME_HEADER_LEN + 10..], false),
            (&headers_whole[..FRAME_HEADER_LEN], true),
            (&headers_whole[FRAME_HEADER_LEN..], false),
            (&data[..4], true),
        ];
        for whole in [false, true] {
            let clock = HeadClock::new(Instant::now(), Duration::from_secs(1));
            let mut scanner = FrameScanner::default();
            for (i, (bytes, pending)) in steps.iter().enumerate() {
                if whole {
                    scanner.feed(bytes, &clock);
                } else {
                    for b in bytes.iter() {
                        scanner.feed(std::slice::from_ref(b), &clock);
                    }
                }
                assert_eq!(clock.pending(), *pending, "step {i}, whole reads: {whole}");
            }
        }
    }

    #[test]
    fn a_stray_continuation_is_not_a_header_block() {
        let clock = HeadClock::new(Instant::now(), Duration::from_secs(1));
        let mut scanner = FrameScanner::default();
        scanner.feed(&[0u8; PREFACE_LEN], &clock);
        scanner.feed(&frame(0x4, 0, 0), &clock);
        scanner.feed(&frame(CONTINUATION, 0, 3), &clock);
        assert!(!clock.pending());
    }
}
