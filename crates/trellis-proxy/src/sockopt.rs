//! The socket options transparent mode rests on: the original destination of a
//! connection that netfilter redirected to the proxy (`SO_ORIGINAL_DST`,
//! `IP6T_SO_ORIGINAL_DST`), and the mark (`SO_MARK`) on the proxy's own connections
//! that lets capture rules tell them from the application's.

use std::io;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

/// The address the client dialled before a `REDIRECT` rule sent the connection here.
/// On a connection no rule redirected it is the connection's own local address (or an
/// error, when nothing tracks connections in the network namespace).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let ipv4 = match stream.local_addr()? {
        SocketAddr::V4(_) => true,
        // An IPv4 client on a dual-stack socket: netfilter tracked it as IPv4.
        SocketAddr::V6(local) => local.ip().to_ipv4_mapped().is_some(),
    };
    let original = if ipv4 {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the original destination is not an IP address",
        )
    })
}

/// Connects to `addr`, with `mark` as the socket's `SO_MARK` when given (which needs
/// `CAP_NET_ADMIN`).
pub async fn connect(addr: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect(addr).await;
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    SockRef::from(&socket).set_mark(mark)?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_nothing_redirected_has_its_own_address_or_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = connect(addr, None).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        // Without connection tracking in this network namespace the kernel knows no
        // original destination; with it, the original is the address itself.
        if let Ok(original) = original_dst(&accepted) {
            assert_eq!(original, addr);
        }
    }
}
