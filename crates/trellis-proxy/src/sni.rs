//! The server name a TLS client asks for, read from its ClientHello without
//! terminating TLS: what a `tls` listener routes on (Gateway API `TLSRoute`, SNI
//! passthrough).
//!
//! Only the first TLS record is read. A ClientHello longer than one record (16 KiB) is
//! treated as naming no server, which routes it to a route without hostnames, if any.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest TLS record: a 5-byte header and up to 16 KiB of payload (RFC 8446 §5.1).
const MAX_RECORD: usize = 5 + 16 * 1024;

/// What the first bytes of a connection say about the server it wants.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello naming this server (lower case).
    ServerName(String),
    /// A ClientHello without a usable `server_name` extension.
    NoServerName,
    /// Not a TLS ClientHello.
    NotTls,
    /// Not enough bytes yet.
    Incomplete,
}

/// Parses the ClientHello at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Hello {
    let mut record = Reader(bytes);
    let Some(&content_type) = bytes.first() else {
        return Hello::Incomplete;
    };
    // Handshake records, of TLS (major version 3) only.
    if content_type != 22 || bytes.get(1).is_some_and(|major| *major != 3) {
        return Hello::NotTls;
    }
    let Some(header) = record.take(5) else {
        return Hello::Incomplete;
    };
    let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(payload) = record.take(length) else {
        return Hello::Incomplete;
    };
    match server_name(payload) {
        Ok(Some(name)) => Hello::ServerName(name),
        Ok(None) => Hello::NoServerName,
        Err(Malformed) => Hello::NotTls,
    }
}

/// Reads from `io` into `prefix` until its ClientHello can be parsed, or `timeout`
/// passes. The bytes stay in `prefix`, to be replayed to the backend.
pub async fn read<I: AsyncRead + Unpin>(
    io: &mut I,
    prefix: &mut BytesMut,
    timeout: Duration,
) -> std::io::Result<Hello> {
    let read = async {
        loop {
            match parse(prefix) {
                Hello::Incomplete if prefix.len() < MAX_RECORD => {}
                Hello::Incomplete => return Ok(Hello::NoServerName),
                hello => return Ok(hello),
            }
            prefix.reserve(4096);
            if io.read_buf(prefix).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

#[derive(Debug)]
struct Malformed;

/// Bounds-checked reads from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        self.take(1).map(|b| b[0]).ok_or(Malformed)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        self.take(2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(Malformed)
    }

    /// A vector with a length prefix of `width` bytes (1, 2 or 3).
    fn vec(&mut self, width: usize) -> Result<&'a [u8], Malformed> {
        let len = self
            .take(width)
            .ok_or(Malformed)?
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        self.take(len).ok_or(Malformed)
    }
}

/// The `server_name` of a handshake message that must be a ClientHello (RFC 8446
/// §4.1.2, RFC 6066 §3). A ClientHello cut off by the end of the record names none.
fn server_name(handshake: &[u8]) -> Result<Option<String>, Malformed> {
    let mut msg = Reader(handshake);
    // client_hello
    if msg.u8()? != 1 {
        return Err(Malformed);
    }
    let Ok(body) = msg.vec(3) else {
        return Ok(None);
    };
    let mut hello = Reader(body);
    hello.take(2 + 32).ok_or(Malformed)?; // legacy_version, random
    hello.vec(1)?; // legacy_session_id
    hello.vec(2)?; // cipher_suites
    hello.vec(1)?; // legacy_compression_methods
    if hello.0.is_empty() {
        return Ok(None);
    }
    let mut extensions = Reader(hello.vec(2)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec(2)?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec(2)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec(2)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).map_err(|_| Malformed)?;
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
                return if valid {
                    Ok(Some(name.to_ascii_lowercase()))
                } else {
                    Err(Malformed)
                };
            }
        }
        return Ok(None);
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
