//! The sidecar's DNS server, so an unmodified application resolves `books` to the
//! Service's virtual IP, which the capture rules then bring to the proxy.
//!
//! UDP and TCP on one address. A and AAAA queries for mesh names ([`names`]) are
//! answered here: A with the virtual IP, AAAA with no records (NOERROR), names in the
//! mesh's zone that are no Service with NXDOMAIN. Everything else — other names, other
//! query types, messages that do not parse — is forwarded as it came to the upstream
//! resolver (the host's, captured when the sidecar started) and its answer relayed.
//! Services are read from the configuration snapshot in force at each query.

pub mod names;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use self::names::Lookup;
use crate::Shared;

/// Time-to-live of answers, in seconds: short, so a Service's removal is noticed soon.
const TTL: u32 = 5;
/// How long the upstream resolver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest DNS message over UDP (EDNS payloads included).
const MAX_UDP: usize = 4096;

/// Where the DNS server listens and whom it asks about other names.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// UDP and TCP address, e.g. `127.0.0.1:53`.
    pub address: SocketAddr,
    /// The namespace short names (`books`) are looked up in.
    pub namespace: String,
    /// The resolver other names go to; `None`: they get SERVFAIL.
    pub upstream: Option<SocketAddr>,
}

/// A running DNS server; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    pub address: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP and TCP on `settings.address` (port 0: a free port, the same for both)
/// and serves until dropped.
pub(crate) async fn serve(settings: DnsSettings, shared: Arc<Shared>) -> io::Result<DnsServer> {
    let (udp, tcp) = bind_both(settings.address).await?;
    let address = udp.local_addr()?;
    let settings = Arc::new(settings);
    let udp_task = tokio::spawn(serve_udp(udp, settings.clone(), shared.clone()));
    let tcp_task = tokio::spawn(serve_tcp(tcp, settings, shared));
    tracing::info!(%address, "DNS server listening");
    Ok(DnsServer {
        address,
        tasks: vec![udp_task, tcp_task],
    })
}

/// How many ports the kernel picks for UDP before giving up on finding one whose TCP
/// twin is free too.
const PICK_ATTEMPTS: usize = 16;

/// A UDP socket and a TCP listener on one address. With port 0, the kernel picks the
/// UDP port, and the same number may already be taken for TCP by another program:
/// another port is picked then.
async fn bind_both(address: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(address).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if address.port() == 0
                    && e.kind() == io::ErrorKind::AddrInUse
                    && attempt < PICK_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

async fn serve_udp(socket: UdpSocket, settings: Arc<DnsSettings>, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "DNS receive failed");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (socket, settings, shared) = (socket.clone(), settings.clone(), shared.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &settings, &shared).await {
                let _ = socket.send_to(&reply, client).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, settings: Arc<DnsSettings>, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (settings, shared) = (settings.clone(), shared.clone());
        tokio::spawn(async move {
            let _ = serve_tcp_connection(stream, &settings, &shared).await;
        });
    }
}

/// Messages over TCP carry a two-byte length first (RFC 1035 4.2.2).
async fn serve_tcp_connection(
    mut stream: TcpStream,
    settings: &DnsSettings,
    shared: &Shared,
) -> io::Result<()> {
    loop {
        let len = match stream.read_u16().await {
            Ok(len) => usize::from(len),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some(reply) = answer(&query, settings, shared).await else {
            return Ok(());
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        stream.write_u16(len).await?;
        stream.write_all(&reply).await?;
    }
}

/// The reply to one query message; `None` when there is nothing to send back.
async fn answer(query: &[u8], settings: &DnsSettings, shared: &Shared) -> Option<Vec<u8>> {
    if let Some(reply) = answer_locally(query, settings, shared) {
        return Some(reply);
    }
    match settings.upstream {
        Some(upstream) => forward(query, upstream).await,
        None => {
            let request = Message::from_vec(query).ok()?;
            let id = request.metadata.id;
            Message::error_msg(id, request.metadata.op_code, ResponseCode::ServFail)
                .to_vec()
                .ok()
        }
    }
}

/// The reply for a query about a mesh name, or `None` to forward the query.
fn answer_locally(query: &[u8], settings: &DnsSettings, shared: &Shared) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
    {
        return None;
    }
    let [question] = request.queries.as_slice() else {
        return None;
    };
    let qtype = question.query_type();
    if !matches!(qtype, RecordType::A | RecordType::AAAA) {
        return None;
    }
    let snapshot = shared.state.load();
    let lookup = snapshot
        .service_names
        .lookup(&question.name().to_ascii(), &settings.namespace);
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(question.clone());
    match lookup {
        Lookup::Elsewhere => return None,
        Lookup::NoSuchName => reply.metadata.response_code = ResponseCode::NXDomain,
        // A mesh name has no IPv6 address: an empty answer, so the client uses A.
        Lookup::Service(_) if qtype == RecordType::AAAA => {}
        Lookup::Service(ip) => {
            let name = question.name().clone();
            reply.add_answer(Record::from_rdata(name, TTL, RData::A(A(ip))));
        }
    }
    reply.to_vec().ok()
}

/// The IPv4 addresses `upstream` gives for `host`: how a transparent sidecar resolves
/// the endpoints it reaches by name (ExternalServices). Its own resolver is its own DNS
/// server, which answers such a host with its virtual IP, the address that brought the
/// application's connection to the sidecar in the first place.
pub(crate) async fn lookup_ipv4(upstream: SocketAddr, host: &str) -> io::Result<Vec<Ipv4Addr>> {
    let invalid = |e: hickory_proto::ProtoError| io::Error::new(io::ErrorKind::InvalidInput, e);
    let garbled = |e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}"));
    let mut name = Name::from_ascii(host).map_err(invalid)?;
    name.set_fqdn(true);
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let bytes = query.to_vec().map_err(invalid)?;
    let no_answer = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {upstream}"),
        )
    };
    let reply = forward(&bytes, upstream).await.ok_or_else(no_answer)?;
    let reply = Message::from_vec(&reply).map_err(garbled)?;
    if reply.metadata.id != query.metadata.id {
        return Err(io::Error::other(format!(
            "{upstream} answered another query"
        )));
    }
    let found: Vec<Ipv4Addr> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{upstream} has no address for it ({})",
                reply.metadata.response_code
            ),
        ));
    }
    Ok(found)
}

/// Sends the query as it came to the upstream resolver and returns its reply.
async fn forward(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; MAX_UDP];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .map_err(|_| tracing::debug!(%upstream, "upstream resolver timed out"))
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests;
