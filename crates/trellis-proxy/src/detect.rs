//! Protocol detection for `protocol: auto` listeners: the HTTP/2 connection preface, an
//! HTTP/1 request line, or else opaque TCP.
//!
//! Detection only peeks: the bytes it reads are handed back so the chosen protocol
//! handler sees the stream from its first byte. A client that sends nothing within the
//! detect timeout is treated as TCP, so server-speaks-first protocols (SMTP, MySQL) work.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

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

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token accepted in an HTTP/1 request line.
const MAX_METHOD: usize = 24;
/// Bytes read without finding the end of an HTTP/1 request line before the decision is
/// left to the HTTP/1 parser (which answers 414 or 400).
const MAX_PEEK: usize = 8 * 1024;

/// Reads from `io` until the protocol is known, the stream ends, or `timeout` passes.
/// Returns the protocol and every byte read so far.
pub async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Duration,
) -> std::io::Result<(Protocol, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => return Ok((Protocol::Tcp, buf)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => {
                let found = classify(&buf).unwrap_or(Protocol::Tcp);
                return Ok((found, buf));
            }
            Ok(Ok(_)) => {
                if let Some(found) = classify(&buf) {
                    return Ok((found, buf));
                }
            }
        }
    }
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

    #[tokio::test(start_paused = true)]
    async fn silence_means_tcp_after_the_timeout() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (found, buf) = detect(&mut server, Duration::from_millis(500))
            .await
            .expect("detect");
        assert_eq!(found, Protocol::Tcp);
        assert!(buf.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn partial_request_line_then_silence_keeps_the_bytes() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET /slow").await.expect("write");
        let (found, buf) = detect(&mut server, Duration::from_millis(500))
            .await
            .expect("detect");
        assert_eq!(found, Protocol::Tcp);
        assert_eq!(&buf[..], b"GET /slow");
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
        let (found, buf) = detect(&mut server, Duration::from_secs(5))
            .await
            .expect("detect");
        assert_eq!(found, Protocol::Http1);
        assert!(buf.starts_with(b"GET / HT"));
        drop(task.await);
    }
}
