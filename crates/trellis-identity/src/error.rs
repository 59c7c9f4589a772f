//! The errors of this crate, one type per operation, so that a caller can tell a
//! refusal it should report to a peer (a CSR for the wrong identity) from a fault of
//! its own configuration (a CA key that does not match its certificate).

use std::fmt;
use std::time::SystemTime;

use crate::spiffe::SpiffeId;

/// A string is not a Trellis SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The value does not start with `spiffe://`.
    #[error("{value:?} is not a SPIFFE ID: it must start with \"spiffe://\"")]
    BadScheme {
        /// The value as given.
        value: String,
    },
    /// The value is longer than the SPIFFE limit of 2048 bytes.
    #[error("SPIFFE ID is {len} bytes long; at most 2048 are accepted")]
    TooLong {
        /// Length of the value in bytes.
        len: usize,
    },
    /// The trust domain is empty.
    #[error("{value:?} has an empty trust domain; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    EmptyTrustDomain {
        /// The value as given.
        value: String,
    },
    /// The trust domain has a character outside `a-z 0-9 . - _`, or is too long.
    #[error(
        "trust domain {trust_domain:?} is not valid: at most 255 lowercase letters, digits, '.', '-' or '_' are accepted"
    )]
    InvalidTrustDomain {
        /// The trust domain as given.
        trust_domain: String,
    },
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("{value:?} does not have the shape spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>")]
    WrongShape {
        /// The value as given.
        value: String,
    },
    /// The namespace or service account is empty.
    #[error("the {segment} of a SPIFFE ID must not be empty")]
    EmptySegment {
        /// Which part is empty: `namespace` or `service account`.
        segment: &'static str,
    },
    /// The namespace or service account has a character SPIFFE does not allow.
    #[error(
        "the {segment} {value:?} is not valid: letters, digits, '.', '-' and '_' are accepted, and not \".\" or \"..\""
    )]
    InvalidSegment {
        /// Which part is invalid: `namespace` or `service account`.
        segment: &'static str,
        /// The part as given.
        value: String,
    },
}

/// A key could not be made or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The system random source or the key generator failed.
    #[error("could not generate a key: {0}")]
    Generate(String),
    /// A CSR could not be serialized.
    #[error("could not build a certificate signing request: {0}")]
    Csr(String),
}

/// The CA refused to sign a certificate signing request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    /// The input is not a PEM or DER encoded PKCS#10 request.
    #[error("malformed certificate signing request: {reason}")]
    Malformed {
        /// What could not be parsed.
        reason: String,
    },
    /// The request is not signed by the key it carries, so the requester does not
    /// hold that key.
    #[error("certificate signing request signature does not verify with its own public key")]
    BadSignature,
    /// The key type is not one the CA issues certificates for.
    #[error("certificate signing request has an unsupported public key: {reason}")]
    UnsupportedKey {
        /// Why the key was not accepted.
        reason: String,
    },
    /// The request carries no URI subject alternative name.
    #[error("certificate signing request has no URI SAN; expected exactly one, {expected}")]
    MissingSpiffeId {
        /// The identity the request was expected to ask for.
        expected: SpiffeId,
    },
    /// The request carries more than one URI subject alternative name.
    #[error("certificate signing request has {count} URI SANs; expected exactly one, {expected}")]
    SeveralUris {
        /// How many URI SANs the request carries.
        count: usize,
        /// The identity the request was expected to ask for.
        expected: SpiffeId,
    },
    /// The request carries a subject alternative name other than a URI (DNS name, IP
    /// address, e-mail) a workload certificate may not carry (it names only a SPIFFE
    /// ID), or a URI a server certificate may not carry.
    #[error(
        "certificate signing request has a {kind} SAN {value:?}, which this certificate may not carry"
    )]
    UnexpectedSan {
        /// The kind of name (`DNS`, `IP`, `email`, `other`).
        kind: &'static str,
        /// The name as given.
        value: String,
    },
    /// The URI subject alternative name is not a SPIFFE ID of the Trellis shape.
    #[error("certificate signing request URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    InvalidSpiffeId {
        /// The URI as given.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// The request asks for another identity than the one its bootstrap token grants.
    #[error(
        "certificate signing request is for {requested}, but the caller may only obtain {expected}"
    )]
    IdentityMismatch {
        /// The identity the caller is entitled to.
        expected: SpiffeId,
        /// The identity the request asked for.
        requested: SpiffeId,
    },
    /// The identity belongs to another trust domain than the CA's.
    #[error("{requested} is outside this CA's trust domain {trust_domain:?}")]
    ForeignTrustDomain {
        /// The CA's trust domain.
        trust_domain: String,
        /// The identity requested.
        requested: SpiffeId,
    },
    /// A server's request names no DNS name.
    #[error("certificate signing request for a server names no DNS name")]
    MissingDnsName,
    /// A server's request names a DNS name it may not have.
    #[error("certificate signing request names {name:?}, which is not one of {allowed:?}")]
    NameNotAllowed {
        /// The name requested.
        name: String,
        /// The names the server may have.
        allowed: Vec<String>,
    },
    /// The request asks for a CA certificate.
    #[error("certificate signing request asks for a CA certificate; workloads get leaf certificates only")]
    RequestsCa,
    /// The requested validity is zero or beyond what X.509 can encode.
    #[error("certificate validity of {seconds} s is not accepted: it must be at least 1 s and end before year 9999")]
    InvalidValidity {
        /// The validity asked for, in seconds.
        seconds: u64,
    },
    /// The signature could not be produced.
    #[error("could not sign the certificate: {0}")]
    Signing(String),
}

/// A CA could not be created or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The trust domain given for a new root is not valid.
    #[error(transparent)]
    TrustDomain(#[from] SpiffeIdError),
    /// The certificate PEM has no certificate, or one that does not parse.
    #[error("CA certificate chain: {0}")]
    Chain(#[from] PemError),
    /// The private key PEM does not hold a PKCS#8 key this crate can sign with.
    #[error("CA private key: {reason}")]
    Key {
        /// Why the key was not accepted.
        reason: String,
    },
    /// The private key is not the key of the first certificate in the chain.
    #[error("the CA private key does not match the public key of the first certificate in the chain ({subject})")]
    KeyMismatch {
        /// Subject of the first certificate.
        subject: String,
    },
    /// The first certificate is not a CA certificate that may sign others.
    #[error("certificate {subject:?} cannot act as a CA: {reason}")]
    NotCa {
        /// Subject of the certificate.
        subject: String,
        /// What is missing (basic constraints, key usage).
        reason: &'static str,
    },
    /// A certificate in the chain is not signed by the next one.
    #[error("certificate chain is out of order: {subject:?} is not signed by the certificate after it ({issuer:?})")]
    ChainOrder {
        /// Subject of the certificate whose signature does not verify.
        subject: String,
        /// Subject of the certificate expected to have signed it.
        issuer: String,
    },
    /// The chain does not end in a self-signed root, so there is nothing for the
    /// trust bundle.
    #[error("certificate chain must end with the self-signed root CA, but ends with {subject:?} issued by {issuer:?}")]
    ChainWithoutRoot {
        /// Subject of the last certificate.
        subject: String,
        /// Its issuer.
        issuer: String,
    },
    /// The CA certificate has expired.
    #[error("CA certificate {subject:?} expired at {not_after:?}")]
    Expired {
        /// Subject of the expired certificate.
        subject: String,
        /// When it expired.
        not_after: SystemTime,
    },
    /// The requested validity cannot be encoded.
    #[error("CA validity of {seconds} s is not accepted: it must be at least 1 s and end before year 9999")]
    InvalidValidity {
        /// The validity asked for, in seconds.
        seconds: u64,
    },
    /// The certificate could not be produced.
    #[error("could not create the CA certificate: {0}")]
    Signing(String),
}

/// PEM input did not hold the certificates expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// No `CERTIFICATE` block was found.
    #[error("no PEM \"CERTIFICATE\" block found")]
    NoCertificate,
    /// The PEM armour is broken.
    #[error("PEM does not decode: {0}")]
    Pem(String),
    /// A certificate's DER content does not parse as X.509.
    #[error("certificate {index} does not parse as X.509: {reason}")]
    BadCertificate {
        /// Position of the certificate in the input, from 0.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// A certificate in a trust bundle is not a CA certificate.
    #[error(
        "certificate {index} ({subject:?}) is not a CA certificate and cannot be a trust anchor"
    )]
    NotCa {
        /// Position of the certificate in the input, from 0.
        index: usize,
        /// Its subject.
        subject: String,
    },
}

/// A certificate chain and key cannot serve as this workload's TLS credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The chain does not parse.
    #[error("workload certificate chain: {0}")]
    Chain(#[from] PemError),
    /// The leaf does not carry exactly one valid SPIFFE ID.
    #[error("workload certificate: {0}")]
    Identity(#[from] PeerIdentityError),
    /// The key is not the key of the leaf certificate.
    #[error("the workload key does not match the certificate: {0}")]
    KeyMismatch(String),
}

/// A peer certificate does not name exactly one SPIFFE ID, or not the one expected.
///
/// `Debug` prints the same text as `Display`: rustls formats the custom error of a
/// refused certificate with `Debug`, and this keeps that message readable.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    /// The certificate does not parse.
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    /// No URI SAN.
    #[error("certificate has no URI SAN, so it names no SPIFFE ID")]
    Missing,
    /// More than one URI SAN.
    #[error("certificate has {0} URI SANs; a SPIFFE certificate carries exactly one")]
    Several(usize),
    /// The URI SAN is not a Trellis SPIFFE ID.
    #[error("certificate URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    Invalid {
        /// The URI as found.
        uri: String,
        /// Why it is not a SPIFFE ID.
        source: SpiffeIdError,
    },
    /// The peer is authenticated but is not who the caller meant to reach.
    #[error("peer presented {presented}, but {expected} was expected")]
    Mismatch {
        /// The identity the caller expected.
        expected: SpiffeId,
        /// The identity the certificate carries.
        presented: SpiffeId,
    },
}

impl fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A TLS configuration could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A bootstrap token was refused or could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not in the `v1.<payload>.<tag>` form, or its payload is garbled.
    #[error("malformed bootstrap token: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token was not signed with this key, or was altered.
    #[error("bootstrap token signature does not verify")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("bootstrap token for {id} expired at {expires_at:?}")]
    Expired {
        /// The identity the token was bound to.
        id: SpiffeId,
        /// When it expired.
        expires_at: SystemTime,
    },
    /// The token claims to be issued in the future, beyond the clock skew allowed.
    #[error("bootstrap token for {id} is not valid before {issued_at:?}")]
    NotYetValid {
        /// The identity the token was bound to.
        id: SpiffeId,
        /// When it says it was issued.
        issued_at: SystemTime,
    },
    /// The key given is too short to be a MAC key.
    #[error("token key is {len} bytes long; at least 32 are required")]
    ShortKey {
        /// Length of the key given.
        len: usize,
    },
    /// The lifetime asked for is below one second.
    #[error("token lifetime must be at least 1 s")]
    InvalidTtl,
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
}
