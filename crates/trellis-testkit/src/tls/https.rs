//! A server outside the mesh as egress tests need one: its own certificate authority,
//! a certificate for DNS names, HTTPS on loopback that answers every request with the
//! server name (SNI) its client asked for, and a TLS client that trusts that CA.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};
use trellis_identity::rustls::pki_types::pem::PemObject;
use trellis_identity::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use trellis_identity::rustls::server::Acceptor;
use trellis_identity::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::shutdown::{self, Trigger};
use crate::BoxError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A certificate authority of a test's own, standing for a public CA.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM: what a client that trusts this CA is given.
    pub cert_pem: String,
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("a CA certificate");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` and its key, as DER.
    pub fn issue(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("DNS names");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).expect("the key");
        (cert.der().clone(), key)
    }

    /// A TLS client config trusting only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("a root");
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// An HTTPS server with a certificate for some DNS names. Every
/// request is answered 200 with `sni=<server name> host=<Host header>`. It records
/// the server name of every ClientHello, handshakes that fail included.
pub struct HttpsServer {
    addr: SocketAddr,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
    _trigger: Trigger,
}

impl HttpsServer {
    /// Starts a server on `127.0.0.1:0` presenting a certificate from `ca` for `names`.
    pub async fn start(ca: &TestCa, names: &[&str]) -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), ca, names).await
    }

    /// The same on `addr` (port 0: a free one).
    pub async fn start_on(addr: SocketAddr, ca: &TestCa, names: &[&str]) -> io::Result<Self> {
        let (cert, key) = ca.issue(names);
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(other)?;
        let config = Arc::new(config);
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let (trigger, shutdown) = shutdown::channel();
        let seen = server_names.clone();
        let spawner = shutdown.clone();
        shutdown.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                spawner.spawn(serve(stream, config.clone(), seen.clone()));
            }
        });
        Ok(Self {
            addr,
            server_names,
            _trigger: trigger,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server name of each ClientHello received, in order (`None`: no SNI).
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.server_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn serve(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    seen: Arc<Mutex<Vec<Option<String>>>>,
) {
    let Ok(start) = LazyConfigAcceptor::new(Acceptor::default(), stream).await else {
        return;
    };
    let sni = start.client_hello().server_name().map(str::to_string);
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(sni.clone());
    let Ok(tls) = start.into_stream(config).await else {
        return;
    };
    let sni = sni.unwrap_or_default();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = format!("sni={sni} host={host}");
        async move { Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(body)))) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// `GET path` over TLS to `addr`, asking for `server_name` and trusting `config`'s
/// roots; returns the status and body.
pub async fn https_get(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<(u16, String), BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    https_get_on(tcp, server_name, config, path).await
}

/// [`https_get`] on a connection already open to the server (through a proxy's
/// `CONNECT` tunnel, say).
pub async fn https_get_on<I>(
    io: I,
    server_name: &str,
    config: Arc<ClientConfig>,
    path: &str,
) -> Result<(u16, String), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let name = ServerName::try_from(server_name.to_string())?;
    let tls = TlsConnector::from(config).connect(name, io).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, server_name)
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
