//! The proxies connected to this control plane and where each one stands: which
//! workload it serves, the config version it was sent, the version it acknowledged, and
//! the last error it reported. `trellis get proxies` reads this.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::compile::Compiled;
use serde::Serialize;

/// Where a proxy's configuration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Sent a version it has not answered yet.
    Pending,
    /// Serving the latest version sent.
    Synced,
    /// Refused the latest version; still serving `ackedVersion`.
    Nacked,
    /// The stream is gone; the proxy keeps serving its last good config.
    Disconnected,
}

/// One proxy as the control plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// The workload the proxy serves (unique per instance).
    pub workload: String,
    pub namespace: String,
    pub service: String,
    /// `ip:port` of the proxy's inbound listener.
    pub address: String,
    pub proxy_version: String,
    /// The last config version sent (0: none yet).
    pub sent_version: u64,
    /// The last config version the proxy acknowledged (0: none).
    pub acked_version: u64,
    pub state: SyncState,
    /// The reason of the last NACK, if the latest version was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339.
    pub connected_at: String,
    /// The SPIFFE ID the proxy's certificates are for.
    pub identity: String,
    /// RFC 3339 end of validity of the last certificate issued to the proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
    /// `host:port` of the proxy's admin server (`/metrics`), when it said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_address: String,
}

/// Every proxy known to this control plane, keyed by workload name.
#[derive(Debug, Default)]
pub struct Registry {
    proxies: RwLock<BTreeMap<String, ProxyStatus>>,
    /// The configuration last sent to each proxy, shared with its session (no copy),
    /// to tell which proxies hold a resource and in what compiled form.
    sent: RwLock<BTreeMap<String, Arc<Compiled>>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// All proxies, sorted by workload name.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.proxies
            .read()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, workload: &str) -> Option<ProxyStatus> {
        self.proxies.read().ok()?.get(workload).cloned()
    }

    /// Records a proxy, replacing what was known of the same workload.
    pub fn upsert(&self, status: ProxyStatus) {
        if let Ok(mut p) = self.proxies.write() {
            p.insert(status.workload.clone(), status);
        }
    }

    /// Changes a known proxy in place; does nothing for an unknown one.
    pub fn update(&self, workload: &str, change: impl FnOnce(&mut ProxyStatus)) {
        if let Ok(mut p) = self.proxies.write() {
            if let Some(status) = p.get_mut(workload) {
                change(status);
            }
        }
    }

    pub fn remove(&self, workload: &str) {
        if let Ok(mut p) = self.proxies.write() {
            p.remove(workload);
        }
        if let Ok(mut sent) = self.sent.write() {
            sent.remove(workload);
        }
    }

    /// Records the configuration just sent to a known proxy.
    pub fn record_sent(&self, workload: &str, config: Arc<Compiled>) {
        if let Ok(mut sent) = self.sent.write() {
            sent.insert(workload.to_string(), config);
        }
    }

    /// Every proxy with the configuration it was last sent (`None` before the first).
    pub fn with_configs(&self) -> Vec<(ProxyStatus, Option<Arc<Compiled>>)> {
        let proxies = self.list();
        let Ok(sent) = self.sent.read() else {
            return Vec::new();
        };
        proxies
            .into_iter()
            .map(|p| {
                let config = sent.get(&p.workload).cloned();
                (p, config)
            })
            .collect()
    }
}

/// The current time as RFC 3339 UTC, for status fields.
pub fn now_rfc3339() -> String {
    trellis_api::meta::rfc3339(SystemTime::now())
}
