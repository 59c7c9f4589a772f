//! Protocol detection: for `protocol: auto` listeners, the HTTP/2 connection preface, an
//! HTTP/1 request line, or else opaque TCP; for listeners with mTLS, first whether the
//! connection opens with a TLS ClientHello.
//!
//! Detection only peeks: the bytes it reads are handed back so the chosen protocol
//! handler sees the stream from its first byte. A client that sends nothing within the
//! detect timeout is treated as TCP, so server-speaks-first protocols (SMTP, MySQL) work.
//! A client whose bytes may still begin an HTTP request is given until its header-read
//! deadline to finish the request line, and is then cut off: trickling a request line
//! must not turn a slow HTTP client into an opaque connection that nothing times.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// The protocol a connection was found to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tcp => "tcp",
        }
    }
}

/// How a connection to an mTLS listener opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// With a TLS ClientHello.
    Tls,
    /// With anything else, or with silence until the deadline.
    Plaintext,
    /// The client closed the connection without sending a byte.
    Closed,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted in an HTTP/1 request line.
const MAX_METHOD: usize = 24;
/// Bytes read without finding the end of an HTTP/1 request line before the decision is
/// left to the HTTP/1 parser (which answers 414 or 400).
const MAX_PEEK: usize = 8 * 1024;
/// TLS record content type of handshake messages.
const TLS_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello.
const TLS_CLIENT_HELLO: u8 = 0x01;
/// Largest TLS plaintext record (RFC 8446 section 5.1).
const TLS_MAX_RECORD: u16 = 1 << 14;

/// When detection gives up.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Silence until then means opaque TCP.
    pub silence: Instant,
    /// Bytes that may still begin an HTTP request until then mean a client too slow to
    /// serve: the connection is cut.
    pub head: Instant,
}

impl Deadlines {
    /// `silence` from now, `head` from `since`.
    pub fn new(silence: Duration, since: Instant, head: Duration) -> Self {
        Self {
            silence: Instant::now() + silence,
            head: since + head,
        }
    }
}

/// Reads from `io` until the protocol is known, the stream ends, or a deadline passes.
/// Returns the protocol and every byte read so far.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    deadlines: Deadlines,
) -> std::io::Result<(Protocol, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let found = detect_at(io, &mut buf, deadlines).await?;
    Ok((found, buf))
}

/// [`detect`] continuing from the bytes already in `buf`. Fails with `TimedOut` when
/// the bytes could still begin an HTTP request at the head deadline.
pub async fn detect_at<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    deadlines: Deadlines,
) -> std::io::Result<Protocol> {
    match read_until(io, buf, deadlines.silence, classify).await? {
        Read::Decided(found) => return Ok(found),
        Read::Ended => return Ok(Protocol::Tcp),
        Read::Deadline if buf.is_empty() => return Ok(Protocol::Tcp),
        Read::Deadline => {}
    }
    match read_until(io, buf, deadlines.head, classify).await? {
        Read::Decided(found) => Ok(found),
        Read::Ended => Ok(Protocol::Tcp),
        Read::Deadline => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no complete request line within the header-read timeout",
        )),
    }
}

/// Reads from `io` into `buf` until it is known whether the connection opens with a
/// TLS ClientHello, the stream ends, or `deadline` passes.
pub async fn opening<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut BytesMut,
    deadline: Instant,
) -> std::io::Result<Opening> {
    Ok(match read_until(io, buf, deadline, classify_tls).await? {
        Read::Decided(true) => Opening::Tls,
        Read::Ended if buf.is_empty() => Opening::Closed,
        _ => Opening::Plaintext,
    })
}

/// How reading for a decision ended.
enum Read<R> {
    Decided(R),
    Deadline,
    Ended,
}

/// Reads into `buf` until `decide` says something about its bytes, the stream ends, or
/// `deadline` passes. The bytes already in `buf` are looked at first.
async fn read_until<T: AsyncRead + Unpin, R>(
    io: &mut T,
    buf: &mut BytesMut,
    deadline: Instant,
    decide: fn(&[u8]) -> Option<R>,
) -> std::io::Result<Read<R>> {
    loop {
        if let Some(found) = decide(buf) {
            return Ok(Read::Decided(found));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Err(_elapsed) => return Ok(Read::Deadline),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok(Read::Ended),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the bytes seen so far open a TLS ClientHello (a handshake record of a TLS
/// version, of plausible length, holding a ClientHello), or `None` when more are needed.
/// Six bytes always decide.
pub fn classify_tls(buf: &[u8]) -> Option<bool> {
    let &content_type = buf.first()?;
    if content_type != TLS_HANDSHAKE {
        return Some(false);
    }
    // Record versions are 3.0 to 3.4; ClientHellos use 3.1 for compatibility.
    let &major = buf.get(1)?;
    if major != 0x03 {
        return Some(false);
    }
    let &minor = buf.get(2)?;
    if minor > 0x04 {
        return Some(false);
    }
    let length = u16::from_be_bytes([*buf.get(3)?, *buf.get(4)?]);
    if !(4..=TLS_MAX_RECORD).contains(&length) {
        return Some(false);
    }
    let &message = buf.get(5)?;
    Some(message == TLS_CLIENT_HELLO)
}

/// Decides the protocol from the bytes seen so far, or `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Some(Protocol::Http2);
    }
    if H2_PREFACE.starts_with(buf) {
        return None;
    }
    classify_http1(buf)
}

fn classify_http1(buf: &[u8]) -> Option<Protocol> {
    let method_len = buf.iter().take_while(|b| is_token_char(**b)).count();
    if method_len == 0 || method_len > MAX_METHOD {
        return Some(Protocol::Tcp);
    }
    match buf.get(method_len) {
        None => return None,
        Some(b' ') => {}
        Some(_) => return Some(Protocol::Tcp),
    }
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return (buf.len() >= MAX_PEEK).then_some(Protocol::Http1);
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let is_http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    Some(if is_http1 {
        Protocol::Http1
    } else {
        Protocol::Tcp
    })
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        let cases: &[(&[u8], Option<Protocol>)] = &[
            (b"", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Some(Protocol::Http2)),
            (b"PRI * HTTP/2.0\r\n", None),
            (b"GET / HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"POST /upload HTTP/1.0\n", Some(Protocol::Http1)),
            (b"GET /a", None),
            (b"GE", None),
            (b"GET / HTTP/2.0\r\n", Some(Protocol::Tcp)),
            (b"HELO example.com\r\n", Some(Protocol::Tcp)),
            (b"\x16\x03\x01\x02\x00", Some(Protocol::Tcp)),
            (b"\x00\x00\x00\x01", Some(Protocol::Tcp)),
            (b" GET / HTTP/1.1\r\n", Some(Protocol::Tcp)),
            (b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Some(Protocol::Tcp)),
        ];
        for (input, want) in cases {
            assert_eq!(
                classify(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn very_long_request_lines_go_to_the_http1_parser() {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_PEEK));
        assert_eq!(classify(&line), Some(Protocol::Http1));
    }

    /// Random input never panics, and a decision never changes when more bytes arrive:
    /// detection may stop at the first decisive byte.
    #[test]
    fn random_input_gets_a_stable_decision() {
        let seeds: [&[u8]; 4] = [b"GET / HTTP/1.1\r\n", H2_PREFACE, b"POST ", b""];
        for round in 0..20_000u32 {
            let mut input = seeds[round as usize % seeds.len()].to_vec();
            let cut = fastrand::usize(..=input.len());
            input.truncate(cut);
            let noise = fastrand::usize(..64);
            input.extend((0..noise).map(|_| {
                const ALPHABET: &[u8] = b" \r\nGETHP/1.0";
                if fastrand::bool() {
                    fastrand::u8(..)
                } else {
                    ALPHABET[fastrand::usize(..ALPHABET.len())]
                }
            }));
            let mut decided = None;
            for end in 0..=input.len() {
                match (decided, classify(&input[..end])) {
                    (Some(before), Some(now)) => assert_eq!(before, now, "{:?}", &input[..end]),
                    (Some(_), None) => panic!("decision withdrawn at {:?}", &input[..end]),
                    (None, now) => decided = now,
                }
            }
        }
    }

    #[test]
    fn recognises_client_hellos() {
        let cases: &[(&[u8], Option<bool>)] = &[
            (b"", None),
            (b"\x16", None),
            (b"\x16\x03\x01\x02", None),
            (b"\x16\x03\x01\x02\x00", None),
            (b"\x16\x03\x01\x02\x00\x01", Some(true)),
            (b"\x16\x03\x03\x00\x40\x01\x00", Some(true)),
            (b"\x16\x03\x01\x02\x00\x02", Some(false)),
            (b"\x16\x03\x05", Some(false)),
            (b"\x16\x02", Some(false)),
            (b"\x16\x03\x01\x40\x01", Some(false)),
            (b"\x16\x03\x01\x00\x03", Some(false)),
            (b"\x17\x03\x03", Some(false)),
            (b"GET / HTTP/1.1\r\n", Some(false)),
            (H2_PREFACE, Some(false)),
        ];
        for (input, want) in cases {
            assert_eq!(classify_tls(input), *want, "{input:?}");
        }
        let mut stable = 0;
        for _ in 0..20_000 {
            let mut input = b"\x16\x03\x01\x02\x00\x01".to_vec();
            input.truncate(fastrand::usize(..=input.len()));
            input.extend((0..fastrand::usize(..8)).map(|_| fastrand::u8(..)));
            let mut decided = None;
            for end in 0..=input.len() {
                match (decided, classify_tls(&input[..end])) {
                    (Some(before), now) => assert_eq!(Some(before), now, "{:?}", &input[..end]),
                    (None, now) => decided = now,
                }
            }
            stable += usize::from(decided.is_some() || input.len() < 6);
        }
        assert_eq!(stable, 20_000, "six bytes always decide");
    }

    #[tokio::test(start_paused = true)]
    async fn openings() {
        let deadline = || Instant::now() + Duration::from_millis(500);
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"\x16\x03\x01\x02\x00\x01rest")
            .await
            .expect("write");
        let mut buf = BytesMut::new();
        let found = opening(&mut server, &mut buf, deadline())
            .await
            .expect("read");
        assert_eq!(found, Opening::Tls);
        assert!(buf.starts_with(b"\x16\x03\x01"));

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut buf = BytesMut::new();
        let found = opening(&mut server, &mut buf, deadline())
            .await
            .expect("read");
        assert_eq!(found, Opening::Plaintext);
        let then = detect_at(&mut server, &mut buf, deadlines())
            .await
            .expect("detect");
        assert_eq!(
            then,
            Protocol::Http1,
            "the plaintext bytes are kept for detection"
        );

        let (client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let silent = opening(&mut server, &mut buf, deadline())
            .await
            .expect("read");
        assert_eq!(silent, Opening::Plaintext);
        drop(client);
        let found = opening(&mut server, &mut buf, deadline())
            .await
            .expect("read");
        assert_eq!(found, Opening::Closed);
    }

    fn deadlines() -> Deadlines {
        Deadlines::new(
            Duration::from_millis(500),
            Instant::now(),
            Duration::from_secs(3),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn silence_means_tcp_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let started = Instant::now();
        let (found, buf) = detect(&mut server, deadlines()).await.expect("detect");
        assert_eq!(found, Protocol::Tcp);
        assert!(buf.is_empty());
        assert_eq!(started.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_line_may_take_until_the_head_deadline() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET /slow").await.expect("write");
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            client.write_all(b" HTTP/1.1\r\n").await.expect("write");
            client
        });
        let (found, buf) = detect(&mut server, deadlines()).await.expect("detect");
        assert_eq!(found, Protocol::Http1);
        assert_eq!(&buf[..], b"GET /slow HTTP/1.1\r\n");
        drop(task.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_line_trickled_past_the_head_deadline_is_cut() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            for byte in b"GET /slow-loris-sends-one-byte-at-a-time".iter() {
                if client.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let started = Instant::now();
        let err = detect(&mut server, deadlines()).await.expect_err("cut");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        task.abort();
    }

    #[tokio::test]
    async fn request_line_split_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let task = tokio::spawn(async move {
            client.write_all(b"GET / HT").await.expect("write");
            client.flush().await.expect("flush");
            tokio::task::yield_now().await;
            client
                .write_all(b"TP/1.1\r\nhost: a\r\n\r\n")
                .await
                .expect("write");
            client
        });
        let (found, buf) = detect(&mut server, deadlines()).await.expect("detect");
        assert_eq!(found, Protocol::Http1);
        assert!(buf.starts_with(b"GET / HT"));
        drop(task.await);
    }
}
