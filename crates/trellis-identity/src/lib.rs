//! Workload identity for the Trellis mesh: SPIFFE IDs, the certificate authority of
//! the control plane, the keys and CSRs of proxies, bootstrap tokens, and the rustls
//! configurations for mTLS between proxies.
//!
//! The flow it supports:
//!
//! 1. The control plane creates or loads a [`CertificateAuthority`] and issues a
//!    bootstrap token ([`token::issue`]) bound to one [`SpiffeId`].
//! 2. A proxy makes a [`WorkloadKey`] locally and sends [`WorkloadKey::csr`] with the
//!    token. The control plane checks the token ([`token::verify`]) and calls
//!    [`CertificateAuthority::sign_csr`] with the token's identity, which refuses a
//!    CSR for any other.
//! 3. The proxy puts the chain and key in a [`CertStore`] together with the
//!    [`TrustBundle`], builds [`server_config`] and [`ClientConfigs`] once, and
//!    swaps in renewed certificates ([`renew_at`]) and rotated bundles without
//!    rebuilding them.
//! 4. After a handshake, [`peer_identity`] tells who the peer is.
//!
//! For calls leaving the mesh, [`origination_client_config`] is the client side of TLS
//! to an outside server, checked against the operator's CA certificates.
//!
//! This is the only crate in the tree that uses rustls, rustls-webpki, rcgen and
//! x509-parser directly, and the whole tree uses the ring crypto provider. It must not
//! depend on `trellis-api`, `trellis-proxy` or `trellis-control`: both of the latter
//! build on it.

mod bundle;
mod ca;
mod csr;
mod error;
pub mod hex;
mod origin;
mod renew;
pub mod seal;
mod spiffe;
mod store;
mod tls;
pub mod token;
mod verify;
mod x509;

pub use crate::bundle::TrustBundle;
pub use crate::ca::{CaPem, CertificateAuthority, IssuedCert, ServerCert};
pub use crate::csr::WorkloadKey;
pub use crate::error::{
    CaError, CredentialsError, CsrError, KeyError, PeerIdentityError, PemError, SpiffeIdError,
    TlsError, TokenError,
};
pub use crate::origin::{origination_client_config, OriginationError};
pub use crate::renew::renew_at;
pub use crate::seal::{SealError, SealingKey};
pub use crate::spiffe::{validate_trust_domain, SpiffeId, DEFAULT_TRUST_DOMAIN};
pub use crate::store::{CertStore, Credentials};
pub use crate::tls::{client_config, server_config, ClientConfigs};
pub use crate::token::{Claims, TokenKey};
pub use crate::verify::{
    peer_identity, verify_peer, PeerRole, SpiffeClientVerifier, SpiffeServerVerifier,
};
pub use crate::x509::CertInfo;

/// The rustls this crate builds on, so that callers name the same types (configs,
/// `ServerName`, `CommonState`) without a rustls dependency of their own.
pub use rustls;
