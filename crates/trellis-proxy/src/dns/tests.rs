//! The DNS server over real sockets: a proxy whose configuration lists Services, an
//! upstream resolver on loopback for everything else.

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use trellis_testkit::dns::StaticDns;

use super::DnsSettings;
use crate::{Proxy, ProxyConfig};

const CONFIG: &str = r#"
admin: 127.0.0.1:0
listeners:
  - name: outbound
    address: 127.0.0.1:0
    originalDestination: {targets: []}
    routes: []
services:
  - {name: books, namespace: shop, virtualIp: 240.240.0.9}
externalHosts:
  - {host: api.payments.example, virtualIp: 240.240.1.1}
"#;

/// An upstream resolver that answers every A query with 192.0.2.53.
async fn upstream() -> StaticDns {
    StaticDns::start(Ipv4Addr::new(192, 0, 2, 53))
        .await
        .expect("upstream DNS")
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    message.to_vec().expect("encode")
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    socket.send(&query(name, qtype)).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).await.expect("reply");
    Message::from_vec(&buf[..n]).expect("a DNS message")
}

fn addresses(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn mesh_names_are_answered_and_others_forwarded() {
    let upstream = upstream().await;
    let proxy = Proxy::start(ProxyConfig::from_yaml(CONFIG).expect("valid"))
        .await
        .expect("proxy");
    let dns = proxy
        .serve_dns(DnsSettings {
            address: "127.0.0.1:0".parse().expect("addr"),
            namespace: "shop".into(),
            upstream: Some(upstream.addr()),
        })
        .await
        .expect("dns");
    let vip = Ipv4Addr::new(240, 240, 0, 9);

    for name in ["books", "books.shop", "books.shop.svc.trellis.local."] {
        let reply = ask_udp(dns.address, name, RecordType::A).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert_eq!(addresses(&reply), [vip], "{name}");
    }
    let aaaa = ask_udp(dns.address, "books", RecordType::AAAA).await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
    assert!(aaaa.answers.is_empty());
    let missing = ask_udp(dns.address, "nothing.shop.svc.trellis.local", RecordType::A).await;
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let other = ask_udp(dns.address, "example.com", RecordType::A).await;
    assert_eq!(addresses(&other), [Ipv4Addr::new(192, 0, 2, 53)]);
    // A declared external host: its virtual IP, so the call comes to the sidecar.
    let external = ask_udp(dns.address, "api.payments.example", RecordType::A).await;
    assert_eq!(addresses(&external), [Ipv4Addr::new(240, 240, 1, 1)]);

    // The same over TCP, length-prefixed.
    let mut tcp = TcpStream::connect(dns.address).await.expect("connect");
    let message = query("books.shop", RecordType::A);
    tcp.write_u16(message.len() as u16).await.expect("write");
    tcp.write_all(&message).await.expect("write");
    let len = tcp.read_u16().await.expect("length");
    let mut reply = vec![0u8; usize::from(len)];
    tcp.read_exact(&mut reply).await.expect("reply");
    let reply = Message::from_vec(&reply).expect("a DNS message");
    assert_eq!(addresses(&reply), [vip]);
}

#[tokio::test]
async fn endpoints_by_name_are_resolved_by_the_upstream_not_the_mesh_dns() {
    let server = upstream().await;
    let upstream = server.addr();
    let found = super::lookup_ipv4(upstream, "api.payments.example")
        .await
        .expect("an answer");
    assert_eq!(found, [Ipv4Addr::new(192, 0, 2, 53)]);
    let invalid = super::lookup_ipv4(upstream, "bad name..example").await;
    assert!(invalid.is_err());
}

#[tokio::test]
async fn a_port_taken_for_tcp_is_reported_when_named_and_avoided_when_picked() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let named = taken.local_addr().expect("addr");
    let error = super::bind_both(named)
        .await
        .expect_err("the TCP port is taken");
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);

    let (udp, tcp) = super::bind_both("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("a port free for both");
    let port = udp.local_addr().expect("udp").port();
    assert_eq!(tcp.local_addr().expect("tcp").port(), port);
}
