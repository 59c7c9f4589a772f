//! mTLS between two workloads over real TCP on 127.0.0.1, with the configs, stores
//! and verifiers of this crate on both ends.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_identity::rustls::pki_types::ServerName;
use trellis_identity::rustls::{CertificateError, OtherError};
use trellis_identity::{
    peer_identity, server_config, token, CertInfo, CertStore, CertificateAuthority, ClientConfigs,
    Credentials, CsrError, IssuedCert, PeerIdentityError, SpiffeId, TokenError, TokenKey,
    TrustBundle, WorkloadKey,
};

const HOUR: Duration = Duration::from_secs(3600);
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1", b"trellis-opaque"];

fn id(sa: &str) -> SpiffeId {
    SpiffeId::in_default_domain("shop", sa).expect("id")
}

fn root() -> CertificateAuthority {
    CertificateAuthority::generate_root("trellis.local", HOUR).expect("root")
}

/// What a proxy does at start: make a key, have it signed, keep both.
fn credentials(
    ca: &CertificateAuthority,
    me: &SpiffeId,
    at: SystemTime,
) -> (Credentials, IssuedCert) {
    let key = WorkloadKey::generate().expect("key");
    let issued = ca
        .sign_csr_at(&key.csr(me).expect("csr"), me, at, Duration::from_secs(600))
        .expect("signed");
    let creds = Credentials::new(&key, &issued.chain_pem).expect("credentials");
    (creds, issued)
}

fn store(ca: &CertificateAuthority, me: &SpiffeId, bundle: TrustBundle) -> Arc<CertStore> {
    CertStore::new(credentials(ca, me, SystemTime::now()).0, bundle)
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Accepted {
    peer: Option<SpiffeId>,
    alpn: Option<Vec<u8>>,
}

/// An echo server over mTLS; each accepted handshake reports on the channel.
async fn serve(
    store: &Arc<CertStore>,
) -> (SocketAddr, mpsc::UnboundedReceiver<io::Result<Accepted>>) {
    let acceptor = TlsAcceptor::from(server_config(store, HTTP_ALPN).expect("server config"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let (_, conn) = tls.get_ref();
                let accepted = Accepted {
                    peer: peer_identity(conn),
                    alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
                };
                let _ = tx.send(Ok(accepted));
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    configs: &ClientConfigs,
    expected: &SpiffeId,
    addr: SocketAddr,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(configs.for_peer(expected))
        .connect(ServerName::from(addr.ip()), tcp)
        .await
}

/// Sends `msg` and reads the echo. In TLS 1.3 the client finishes its handshake
/// before the server has checked the client certificate, so a refusal by the server
/// shows up here.
async fn echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) -> io::Result<Vec<u8>> {
    tls.write_all(msg).await?;
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await?;
    Ok(buf)
}

fn server_serial(tls: &TlsStream<TcpStream>) -> String {
    let (_, conn) = tls.get_ref();
    let leaf = &conn.peer_certificates().expect("server certificate")[0];
    CertInfo::from_der(leaf).expect("parses").serial
}

fn rustls_error(e: &io::Error) -> &trellis_identity::rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<trellis_identity::rustls::Error>())
        .unwrap_or_else(|| panic!("not a TLS error: {e:?}"))
}

fn cert_error(e: &io::Error) -> &CertificateError {
    match rustls_error(e) {
        trellis_identity::rustls::Error::InvalidCertificate(c) => c,
        other => panic!("not a certificate error: {other:?}"),
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<io::Result<Accepted>>) -> io::Result<Accepted> {
    rx.recv().await.expect("server reports every handshake")
}

#[tokio::test]
async fn mutual_tls_both_ways_and_peer_identity() {
    let ca = root();
    let server = store(&ca, &id("cart"), ca.trust_bundle());
    let client = store(&ca, &id("web"), ca.trust_bundle());
    let (addr, mut accepted) = serve(&server).await;

    let configs = ClientConfigs::new(client, &[b"h2"]).expect("client configs");
    let mut tls = connect(&configs, &id("cart"), addr)
        .await
        .expect("handshake");
    assert_eq!(echo(&mut tls, b"ping").await.expect("echo"), b"ping");

    let (_, conn) = tls.get_ref();
    assert_eq!(peer_identity(conn), Some(id("cart")));
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        conn.protocol_version(),
        Some(trellis_identity::rustls::ProtocolVersion::TLSv1_3)
    );

    let seen = next(&mut accepted).await.expect("server accepted");
    assert_eq!(seen.peer, Some(id("web")));
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));

    // The opaque-TCP protocol name is negotiated the same way.
    let opaque = ClientConfigs::new(
        store(&ca, &id("web"), ca.trust_bundle()),
        &[b"trellis-opaque"],
    )
    .expect("client configs");
    let mut tls = connect(&opaque, &id("cart"), addr)
        .await
        .expect("handshake");
    assert_eq!(echo(&mut tls, b"raw").await.expect("echo"), b"raw");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"trellis-opaque"[..])
    );
}

#[tokio::test]
async fn client_refuses_a_server_with_another_identity() {
    let ca = root();
    let server = store(&ca, &id("payments"), ca.trust_bundle());
    let (addr, _accepted) = serve(&server).await;
    let configs = ClientConfigs::new(store(&ca, &id("web"), ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");

    let err = connect(&configs, &id("cart"), addr)
        .await
        .expect_err("wrong server");
    let CertificateError::Other(OtherError(inner)) = cert_error(&err) else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(
        inner.downcast_ref::<PeerIdentityError>(),
        Some(&PeerIdentityError::Mismatch {
            expected: id("cart"),
            presented: id("payments"),
        })
    );
    assert!(
        err.to_string()
            .contains("but spiffe://trellis.local/ns/shop/sa/cart was expected"),
        "{err}"
    );

    // The same client reaches the server when it expects the right identity.
    let mut tls = connect(&configs, &id("payments"), addr)
        .await
        .expect("handshake");
    assert_eq!(echo(&mut tls, b"ok").await.expect("echo"), b"ok");
}

#[tokio::test]
async fn certificates_from_an_untrusted_ca_are_refused_both_ways() {
    let ca = root();
    let stranger = root();

    // The client trusts only `ca`; the server's certificate comes from `stranger`.
    let server = store(&stranger, &id("cart"), stranger.trust_bundle());
    let (addr, _accepted) = serve(&server).await;
    let configs = ClientConfigs::new(store(&ca, &id("web"), ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");
    let err = connect(&configs, &id("cart"), addr)
        .await
        .expect_err("untrusted server");
    assert_eq!(cert_error(&err), &CertificateError::UnknownIssuer);

    // The server trusts only `ca`; the client's certificate comes from `stranger`,
    // though the client trusts the server.
    let server = store(&ca, &id("cart"), ca.trust_bundle());
    let (addr, mut accepted) = serve(&server).await;
    let configs = ClientConfigs::new(store(&stranger, &id("web"), ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");
    let client_side = match connect(&configs, &id("cart"), addr).await {
        Ok(mut tls) => echo(&mut tls, b"ping").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        client_side.is_err(),
        "the server must not talk to an untrusted client"
    );
    let err = next(&mut accepted).await.expect_err("untrusted client");
    assert_eq!(cert_error(&err), &CertificateError::UnknownIssuer);
}

#[tokio::test]
async fn expired_certificates_are_refused_both_ways() {
    let ca = root();
    let an_hour_ago = SystemTime::now() - HOUR;

    // Issued an hour ago for ten minutes: expired fifty minutes ago.
    let (expired, issued) = credentials(&ca, &id("cart"), an_hour_ago);
    assert!(issued.not_after < SystemTime::now());
    let server = CertStore::new(expired, ca.trust_bundle());
    let (addr, _accepted) = serve(&server).await;
    let configs = ClientConfigs::new(store(&ca, &id("web"), ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");
    let err = connect(&configs, &id("cart"), addr)
        .await
        .expect_err("expired server");
    assert!(
        matches!(cert_error(&err), CertificateError::ExpiredContext { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("certificate expired"), "{err}");

    let server = store(&ca, &id("cart"), ca.trust_bundle());
    let (addr, mut accepted) = serve(&server).await;
    let (expired, _) = credentials(&ca, &id("web"), an_hour_ago);
    let configs = ClientConfigs::new(CertStore::new(expired, ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");
    if let Ok(mut tls) = connect(&configs, &id("cart"), addr).await {
        assert!(echo(&mut tls, b"ping").await.is_err());
    }
    let err = next(&mut accepted).await.expect_err("expired client");
    assert!(
        matches!(cert_error(&err), CertificateError::ExpiredContext { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn renewed_certificate_is_used_by_new_handshakes_only() {
    let ca = root();
    let (first, first_issued) = credentials(&ca, &id("cart"), SystemTime::now());
    let server = CertStore::new(first, ca.trust_bundle());
    let (addr, mut accepted) = serve(&server).await;
    let configs = ClientConfigs::new(store(&ca, &id("web"), ca.trust_bundle()), HTTP_ALPN)
        .expect("client configs");

    let mut old_conn = connect(&configs, &id("cart"), addr)
        .await
        .expect("handshake");
    assert_eq!(
        echo(&mut old_conn, b"before").await.expect("echo"),
        b"before"
    );
    assert_eq!(server_serial(&old_conn), first_issued.serial);
    next(&mut accepted).await.expect("accepted");

    // Renewal: a new key and certificate, swapped in without touching any config.
    let (renewed, renewed_issued) = credentials(&ca, &id("cart"), SystemTime::now());
    server.set_credentials(renewed);
    assert_eq!(server.credentials().leaf().serial, renewed_issued.serial);

    let mut new_conn = connect(&configs, &id("cart"), addr)
        .await
        .expect("handshake");
    assert_eq!(echo(&mut new_conn, b"after").await.expect("echo"), b"after");
    assert_eq!(server_serial(&new_conn), renewed_issued.serial);
    assert_ne!(renewed_issued.serial, first_issued.serial);

    // The connection made before the swap still works on its original keys.
    assert_eq!(echo(&mut old_conn, b"still").await.expect("echo"), b"still");
}

#[tokio::test]
async fn trust_bundle_rotation() {
    let old_ca = root();
    let new_ca = root();
    let mut overlap = old_ca.trust_bundle();
    overlap.merge(&new_ca.trust_bundle());
    assert_eq!(overlap.len(), 2);

    // During the overlap a server accepts clients holding certificates from either root.
    let server = store(&new_ca, &id("cart"), overlap.clone());
    let (addr, mut accepted) = serve(&server).await;
    let from_old = ClientConfigs::new(store(&old_ca, &id("web"), overlap.clone()), HTTP_ALPN)
        .expect("client configs");
    let from_new = ClientConfigs::new(store(&new_ca, &id("api"), overlap.clone()), HTTP_ALPN)
        .expect("client configs");

    let mut tls = connect(&from_old, &id("cart"), addr)
        .await
        .expect("old root");
    assert_eq!(echo(&mut tls, b"old").await.expect("echo"), b"old");
    assert_eq!(
        next(&mut accepted).await.expect("accepted").peer,
        Some(id("web"))
    );
    let mut tls = connect(&from_new, &id("cart"), addr)
        .await
        .expect("new root");
    assert_eq!(echo(&mut tls, b"new").await.expect("echo"), b"new");
    assert_eq!(
        next(&mut accepted).await.expect("accepted").peer,
        Some(id("api"))
    );

    // End of the overlap: the old root leaves the server's bundle.
    let old_fp = old_ca.certificate().fingerprint.clone();
    let mut rotated = overlap.clone();
    assert!(rotated.remove(&old_fp));
    server.set_trust_bundle(rotated);
    assert_eq!(server.trust_anchors().len(), 1);

    if let Ok(mut tls) = connect(&from_old, &id("cart"), addr).await {
        assert!(echo(&mut tls, b"old").await.is_err());
    }
    let err = next(&mut accepted)
        .await
        .expect_err("old root no longer trusted");
    assert!(
        matches!(
            cert_error(&err),
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        ),
        "{err:?}"
    );
    let mut tls = connect(&from_new, &id("cart"), addr)
        .await
        .expect("new root");
    assert_eq!(echo(&mut tls, b"new").await.expect("echo"), b"new");
}

#[tokio::test]
async fn intermediate_ca_from_pem_issues_verifiable_leaves() {
    let org_root = root();
    let handed_over = org_root
        .issue_intermediate(HOUR)
        .expect("intermediate")
        .to_pem();
    let ca = CertificateAuthority::from_pem(&handed_over.cert_chain, &handed_over.key)
        .expect("operator intermediate");
    // Workloads trust the organisation root only.
    let bundle = TrustBundle::from_pem(&org_root.trust_bundle().to_pem()).expect("bundle");

    let server = store(&ca, &id("cart"), bundle.clone());
    assert_eq!(
        server.credentials().certified_key().cert.len(),
        2,
        "leaf and intermediate"
    );
    let (addr, mut accepted) = serve(&server).await;
    let configs =
        ClientConfigs::new(store(&ca, &id("web"), bundle), HTTP_ALPN).expect("client configs");
    let mut tls = connect(&configs, &id("cart"), addr)
        .await
        .expect("handshake");
    assert_eq!(echo(&mut tls, b"chain").await.expect("echo"), b"chain");
    assert_eq!(
        next(&mut accepted).await.expect("accepted").peer,
        Some(id("web"))
    );
}

#[test]
fn bootstrap_token_gates_the_csr() {
    let ca = root();
    let key = TokenKey::generate().expect("token key");
    let cart = id("cart");

    // The control plane hands out a token for `cart`; the proxy presents it with a CSR.
    let bearer = token::issue(&key, &cart, Duration::from_secs(300)).expect("token");
    let claims = token::verify(&key, &bearer, SystemTime::now()).expect("valid token");
    assert_eq!(claims.id, cart);

    let workload = WorkloadKey::generate().expect("key");
    let issued = ca
        .sign_csr(&workload.csr(&cart).expect("csr"), &claims.id, HOUR)
        .expect("signed for the token's identity");
    assert_eq!(issued.id, cart);

    // A CSR for an identity other than the token's is refused.
    let err = ca
        .sign_csr(&workload.csr(&id("admin")).expect("csr"), &claims.id, HOUR)
        .expect_err("foreign identity");
    assert!(matches!(err, CsrError::IdentityMismatch { .. }), "{err:?}");

    // So is a malformed one.
    let err = ca
        .sign_csr(
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            &claims.id,
            HOUR,
        )
        .expect_err("malformed");
    assert!(matches!(err, CsrError::Malformed { .. }), "{err:?}");

    // Tampered, expired and foreign-key tokens never get that far.
    let tampered = format!("{}A", bearer);
    assert!(token::verify(&key, &tampered, SystemTime::now()).is_err());
    let expired = token::verify(&key, &bearer, SystemTime::now() + Duration::from_secs(301));
    assert!(
        matches!(expired, Err(TokenError::Expired { .. })),
        "{expired:?}"
    );
    let other_key = TokenKey::generate().expect("token key");
    assert_eq!(
        token::verify(&other_key, &bearer, SystemTime::now()),
        Err(TokenError::BadSignature)
    );
}
