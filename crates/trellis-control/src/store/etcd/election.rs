//! Elections on etcd, on leases: a candidate's membership is the key
//! `<prefix>election/<name>/<lease id>`, bound to a lease it keeps alive. Members are
//! ordered by the revision that created their key, and the oldest leads. A candidate
//! that dies, or cannot reach a quorum, stops renewing; etcd then deletes its key when
//! the lease runs out, and the next member leads.
//!
//! Two control planes must never both act as leader. A candidate knows that its lease
//! lives at least `ttl` after it sent the renewal etcd last acknowledged (etcd counts
//! from when it receives it), so it calls itself leader only until three quarters of
//! that, and steps down at once when it passes without a newer acknowledgement. Nobody
//! else can lead before the lease ends, so the two never overlap, clock rates allowing.
//! A candidate that lost its lease joins again with a new one, behind everyone.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{
    GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder, SortTarget,
};
use tokio::sync::watch;
use tokio::time::Instant;

use super::call::Op;
use super::{prefix_end, Conn};
use crate::store::{Campaign, Standing, StoreError};

/// Pause before joining again after the cluster failed a candidate.
const RETRY: Duration = Duration::from_millis(500);

/// Joins election `name` as `candidate` with leases of `ttl`.
pub(super) fn campaign(conn: Conn, name: &str, candidate: &str, ttl: Duration) -> Campaign {
    let members = format!("{}election/{name}/", conn.root);
    let candidate = candidate.to_owned();
    let ttl = ttl.max(Duration::from_secs(2));
    Campaign::spawn(move |standing, mut resigned| async move {
        let candidacy = Candidacy {
            conn,
            members,
            candidate,
            ttl,
            lease: AtomicI64::new(NO_LEASE),
        };
        loop {
            tokio::select! {
                ended = candidacy.term(&standing) => {
                    standing.send_replace(Standing::default());
                    match ended {
                        Ok(()) => tracing::warn!("lost the leader-election lease; joining again"),
                        Err(e) => tracing::debug!(error = %e, "cannot take part in the election"),
                    }
                    candidacy.revoke().await;
                }
                _ = resigned.changed() => return candidacy.revoke().await,
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY) => {}
                _ = resigned.changed() => return,
            }
        }
    })
}

/// etcd never grants lease 0.
const NO_LEASE: i64 = 0;

struct Candidacy {
    conn: Conn,
    /// The members' keys start with this.
    members: String,
    candidate: String,
    ttl: Duration,
    /// The lease of the current term, to revoke when it ends ([`NO_LEASE`]: none).
    lease: AtomicI64,
}

impl Candidacy {
    /// One lease's candidacy: joins, then renews the lease and reads the members every
    /// third of the lease until it cannot (`Ok`: the lease is lost). The caller resigns.
    async fn term(&self, standing: &watch::Sender<Standing>) -> Result<(), StoreError> {
        let ttl_secs = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let granted_at = Instant::now();
        // A grant retried after a lost answer leaves an unused lease, which expires.
        let lease = self
            .conn
            .call(Op::Read("grant a lease"), |mut client| async move {
                client.lease_grant(ttl_secs, None).await
            })
            .await?
            .id();
        self.lease.store(lease, Ordering::Relaxed);
        let key = format!("{}{lease:016x}", self.members);
        let value = self.candidate.clone();
        // The same key, value and lease each time: repeating the put is harmless.
        self.conn
            .call(Op::Read("join the election"), |mut client| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let options = PutOptions::new().with_lease(lease);
                    client.put(key, value, Some(options)).await
                }
            })
            .await?;
        let tick = self.ttl / 3;
        let mut valid_until = granted_at + self.ttl * 3 / 4;
        let mut keeper = None;
        loop {
            if Instant::now() >= valid_until {
                return Ok(());
            }
            match tokio::time::timeout_at(valid_until, self.members(&key)).await {
                Ok(Ok(Some(members))) => {
                    standing.send_if_modified(|s| {
                        let now = Standing::among(members, &self.candidate, lease.unsigned_abs());
                        let changed = *s != now;
                        *s = now;
                        changed
                    });
                }
                // Our key is gone: etcd ended the lease.
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot read the election's members"),
                Err(_) => return Ok(()),
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = tokio::time::sleep_until(valid_until) => return Ok(()),
            }
            let sent = Instant::now();
            match tokio::time::timeout(tick, self.renew(lease, &mut keeper)).await {
                Ok(Ok(true)) => valid_until = sent + self.ttl * 3 / 4,
                Ok(Ok(false)) => return Ok(()),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "cannot renew the election lease");
                    keeper = None;
                }
                Err(_) => keeper = None,
            }
        }
    }

    /// Renews the lease over the keep-alive stream, opening one if needed; false when
    /// etcd says the lease has ended.
    async fn renew(
        &self,
        lease: i64,
        keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    ) -> Result<bool, etcd_client::Error> {
        if keeper.is_none() {
            let mut client = self.conn.caller.client.clone();
            *keeper = Some(client.lease_keep_alive(lease).await?);
        }
        let Some((sender, responses)) = keeper.as_mut() else {
            return Ok(false);
        };
        sender.keep_alive().await?;
        match responses.message().await? {
            Some(response) => Ok(response.ttl() > 0),
            None => Err(etcd_client::Error::WatchError(
                "the keep-alive stream ended".into(),
            )),
        }
    }

    /// The members' candidate values, oldest first; `None` if `own` is not among them.
    async fn members(&self, own: &str) -> Result<Option<Vec<String>>, StoreError> {
        let start = self.members.clone();
        let response = self
            .conn
            .call(Op::Read("read the election's members"), |mut client| {
                let start = start.clone();
                async move {
                    let options = GetOptions::new()
                        .with_range(prefix_end(start.as_bytes()))
                        .with_sort(SortTarget::Create, SortOrder::Ascend);
                    client.get(start, Some(options)).await
                }
            })
            .await?;
        let kvs = response.kvs();
        if !kvs.iter().any(|kv| kv.key() == own.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(
            kvs.iter()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .collect(),
        ))
    }

    /// Ends the lease, deleting the membership, so the next member need not wait for it
    /// to run out. Best effort: an unreachable cluster expires it anyway.
    async fn revoke(&self) {
        let lease = self.lease.swap(NO_LEASE, Ordering::Relaxed);
        if lease == NO_LEASE {
            return;
        }
        let mut client = self.conn.caller.client.clone();
        let revoked = tokio::time::timeout(self.ttl / 3, client.lease_revoke(lease)).await;
        if !matches!(revoked, Ok(Ok(_))) {
            tracing::debug!("cannot revoke the election lease; it will expire");
        }
    }
}
