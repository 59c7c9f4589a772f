//! Leader election among the control-plane replicas on a `coordination.k8s.io` Lease,
//! for the work only one of them should do (writing status back to the cluster).
//!
//! The holder renews the Lease every third of its duration; another replica takes it
//! over once a whole duration passes without a renewal. Every write carries the
//! Lease's `resourceVersion`, so two replicas can never both win a takeover. A replica
//! that cannot renew (API server unreachable) stops leading at once rather than when
//! the Lease runs out, so two leaders never overlap by more than the API server's own
//! delay.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease the control-plane replicas compete for.
pub const LEASE_NAME: &str = "trellis-control";
/// How long a Lease holds without renewal, by default.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// This replica's part in the election; leaves it (without releasing the Lease,
/// which then runs out) when dropped.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Joins the election for the Lease `LEASE_NAME` in `namespace` as `identity`.
    pub fn campaign(client: Client, namespace: &str, identity: String, duration: Duration) -> Self {
        let (tx, leading) = watch::channel(false);
        let leases: Api<Lease> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            loop {
                let now_leading = match round(&leases, &identity, duration).await {
                    Ok(leading) => leading,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew or take the control-plane Lease");
                        false
                    }
                };
                tx.send_if_modified(|was| {
                    let changed = *was != now_leading;
                    if changed {
                        tracing::info!(leading = now_leading, identity = %identity, "control-plane leadership");
                    }
                    *was = now_leading;
                    changed
                });
                tokio::time::sleep(duration / 3).await;
            }
        });
        Self { leading, task }
    }

    /// Whether this replica leads now, and each change.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One election round: renews the Lease if held, takes it if free or expired.
/// Returns whether this replica holds it now.
async fn round(
    leases: &Api<Lease>,
    identity: &str,
    duration: Duration,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let held = |transitions: i32| LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = leases.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                ..Default::default()
            },
            spec: Some(held(0)),
        };
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let spec = if holder == identity {
        LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..spec
        }
    } else {
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(seconds));
        let expired = renewed.is_none_or(|t| now.as_second() > t.as_second() + lasts);
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
        held(spec.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(spec);
    // `replace` carries the resourceVersion read above: a concurrent writer makes it fail.
    match leases
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
