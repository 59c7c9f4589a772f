//! TLS in tests: a client's first bytes (what SNI routing reads), and in [`https`] a
//! server outside the mesh with a certificate authority of its own.

pub mod https;

use std::sync::Arc;

use trellis_identity::rustls;

/// The first flight of a real TLS 1.3/1.2 client (rustls) asking for `server`: a
/// ClientHello with `server` as its SNI, or with none when `server` is an IP address.
pub fn client_hello(server: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls supports its default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server.to_string())
        .expect("a DNS name or an IP address");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).expect("a client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("the ClientHello");
    hello
}
