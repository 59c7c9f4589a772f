//! The seam to a platform that owns the workloads and their identities (Kubernetes:
//! Pods and ServiceAccount tokens), in place of the control plane's own registrations
//! and bootstrap tokens.
//!
//! With a platform, a proxy's session neither writes nor removes its Workload: the
//! platform's source writes the workloads into the store. The proxy proves which
//! workload it is with a credential the platform checks.

use std::fmt;

use trellis_api::proto::v1::Workload;

/// A platform the control plane runs on, beside universal mode.
#[async_trait::async_trait]
pub trait Platform: Send + Sync + 'static {
    /// The platform's name, for logs (`kubernetes`).
    fn name(&self) -> &'static str;

    /// Checks the credential a proxy presented in its `Hello` for `workload`: `Ok` only
    /// when it proves that workload's namespace and service account (and, where the
    /// platform binds credentials to one instance, its name). The error says why not.
    async fn authenticate(&self, credential: &str, workload: &Workload) -> Result<(), String>;
}

impl fmt::Debug for dyn Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Platform({})", self.name())
    }
}
