//! The injection webhook served over TLS by the control plane.
//!
//! The API server calls a webhook only over HTTPS, by the Service's DNS name, and
//! checks the certificate against the `caBundle` of the webhook configuration. The
//! serving certificate comes from the mesh CA: the replica makes its own key, and the
//! CA signs a server certificate for [`serving_names`] only (no SPIFFE ID, so no proxy
//! ever takes it for a workload). It is renewed at about half its life, and at once
//! when the CA's signer changes (a rotation); connections pick the new one up at their
//! next handshake. [`super::ca_bundle`] keeps the configuration's `caBundle` equal to
//! the mesh's trust bundle, so the API server trusts whichever certificate is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kube::Client;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;
use trellis_control::ca::MeshCa;
use trellis_identity::rustls::server::{ClientHello, ResolvesServerCert};
use trellis_identity::rustls::sign::CertifiedKey;
use trellis_identity::rustls::{self, ServerConfig};
use trellis_identity::WorkloadKey;

use super::webhook::{certificate_request, router, serving_names};
use super::InjectSettings;

/// How long a TLS handshake may take before the connection is dropped: the API
/// server's calls are quick, and a stalled peer must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Where the control plane serves the webhook, and what it injects.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The address to listen on (`trellis install` exposes port 7443 as the
    /// Service's 443).
    pub addr: SocketAddr,
    pub inject: InjectSettings,
}

/// The webhook, served over TLS on its own port, with the configuration's `caBundle`
/// kept current ([`super::ca_bundle`]). Stops on drop.
pub struct WebhookServer {
    /// Where it listens.
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl WebhookServer {
    /// Binds the address and serves the injector with a certificate for the Service
    /// `trellis-control` in `namespace`, signed by `ca` and kept current; while
    /// `leading`, writes the trust bundle into the webhook configuration through
    /// `client`.
    pub async fn start(
        settings: WebhookSettings,
        namespace: &str,
        ca: Arc<MeshCa>,
        client: Client,
        leading: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let issued = issue(&ca, namespace).context("cannot certify the injection webhook")?;
        let current = Arc::new(ServingCert(RwLock::new(issued.key.clone())));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the injection webhook on {addr}"))?;
        let addr = listener.local_addr().context("the webhook's address")?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tracing::info!(%addr, names = ?serving_names(namespace), "injection webhook serving");
        Ok(Self {
            addr,
            tasks: vec![
                tokio::spawn(serve(listener, acceptor, router(Arc::new(settings.inject)))),
                tokio::spawn(renew(ca.clone(), namespace.to_owned(), current, issued)),
                tokio::spawn(super::ca_bundle::keep_current(client, ca, leading)),
            ],
        })
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The certificate handshakes present; replaced on renewal.
#[derive(Debug)]
struct ServingCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// A serving key and certificate, and when to renew them.
struct Issued {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
}

/// A fresh key, certified by the mesh CA for the [`serving_names`] in `namespace`.
fn issue(ca: &MeshCa, namespace: &str) -> anyhow::Result<Issued> {
    let key = WorkloadKey::generate()?;
    let csr = certificate_request(namespace, &key)?;
    let cert = ca.sign_server(&csr, &serving_names(namespace))?;
    Ok(Issued {
        key: key.certified(&cert.chain_pem)?,
        renew_at: trellis_identity::renew_at(cert.not_before, cert.not_after, fastrand::f64()),
    })
}

/// Renews the certificate at about half its life, and when the CA's signer changes.
async fn renew(ca: Arc<MeshCa>, namespace: String, current: Arc<ServingCert>, first: Issued) {
    let mut versions = ca.subscribe();
    let mut generation = versions.borrow_and_update().signer_generation;
    let mut renew_at = first.renew_at;
    loop {
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = versions.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = versions.borrow_and_update().signer_generation;
                if now == generation {
                    continue;
                }
                generation = now;
            }
        }
        match issue(&ca, &namespace) {
            Ok(issued) => {
                *current.0.write().unwrap_or_else(|e| e.into_inner()) = issued.key;
                renew_at = issued.renew_at;
                tracing::info!("injection webhook certificate renewed");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the injection webhook's certificate; retrying");
                renew_at = SystemTime::now() + RETRY;
            }
        }
    }
}

/// Accepts connections until aborted; each is served on its own task, and aborted
/// with it: a stopped control plane answers no more calls, not even on the API
/// server's kept-alive connections.
async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut router = router.clone();
                async move {
                    Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {}))
                }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}
