//! A DNS server on loopback that answers every A query with one address: the upstream
//! resolver a sidecar forwards to, in tests.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tokio::net::UdpSocket;

use crate::shutdown::{self, Trigger};

/// Answers every query over UDP with an A record of one address, whatever the name.
/// Stops when dropped.
pub struct StaticDns {
    addr: SocketAddr,
    _trigger: Trigger,
}

impl StaticDns {
    /// Starts a server on `127.0.0.1:0` that answers `answer`.
    pub async fn start(answer: Ipv4Addr) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), answer).await
    }

    /// Starts a server on `addr` (port 0: a free one) that answers `answer`.
    pub async fn start_on(addr: SocketAddr, answer: Ipv4Addr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let (trigger, shutdown) = shutdown::channel();
        shutdown.spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
                for q in &request.queries {
                    reply.add_query(q.clone());
                    let data = RData::A(A(answer));
                    reply.add_answer(Record::from_rdata(q.name().clone(), 60, data));
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Ok(Self {
            addr,
            _trigger: trigger,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
