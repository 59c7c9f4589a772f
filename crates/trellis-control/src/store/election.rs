//! Leader election among the control planes sharing a store, for the work exactly one
//! of them must do (removing workloads nobody serves, pacing a trust-anchor rotation).
//!
//! Every control plane joins an election as a candidate and stays a member while it
//! lives. The members are known to all, in the order they joined; the first is the
//! leader. On etcd a member is a key bound to the candidate's lease, so a control plane
//! that dies or loses the cluster leaves when its lease expires, and it stops calling
//! itself leader before that can happen (see `etcd/election.rs`). The embedded store is
//! opened by one process only, so its one candidate always leads; the in-memory store
//! keeps its members in memory, for tests of several control planes on one store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a candidate knows of its election.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Whether this candidate leads. False while the store cannot confirm it.
    pub leading: bool,
    /// The leader's candidate value, when known.
    pub leader: Option<String>,
    /// Every member's candidate value, the leader first; empty while unknown.
    pub members: Vec<String>,
    /// Which membership of this candidate this is (0: none now): it changes each time
    /// the candidate joins again after dropping out, e.g. when its etcd lease ran out.
    pub term: u64,
}

/// A candidacy: followed through [`Campaign::standing`], given up on drop.
pub struct Campaign {
    standing: watch::Receiver<Standing>,
    /// Dropped with the campaign, which tells its task to resign.
    _resign: watch::Sender<()>,
    task: Option<tokio::task::AbortHandle>,
}

impl Standing {
    /// The standing of `me` among `members` (in joining order), in membership `term`.
    pub fn among(members: Vec<String>, me: &str, term: u64) -> Self {
        Self {
            leading: members.first().is_some_and(|first| first == me),
            leader: members.first().cloned(),
            members,
            term,
        }
    }
}

impl Campaign {
    /// A campaign whose standing `run` publishes until the campaign is dropped, which
    /// closes the channel `run` is given.
    pub(super) fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(watch::Sender<Standing>, watch::Receiver<()>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (standing_tx, standing) = watch::channel(Standing::default());
        let (resign, resigned) = watch::channel(());
        let task = tokio::spawn(run(standing_tx, resigned)).abort_handle();
        Self {
            standing,
            _resign: resign,
            task: Some(task),
        }
    }

    /// The only candidate of a store no one else opens: it leads at once.
    pub fn sole(candidate: &str) -> Self {
        let (_, standing) =
            watch::channel(Standing::among(vec![candidate.to_owned()], candidate, 1));
        Self {
            standing,
            _resign: watch::channel(()).0,
            task: None,
        }
    }

    /// Stops the campaign without resigning, as a crash would: the others notice only
    /// when its membership expires.
    pub fn abandon(self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Follows the standing; it changes as members join and leave.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }
}

/// A member of a local election: its ticket (unique in the store) and candidate value.
type Ticket = (u64, String);

/// Elections among the users of one in-memory store.
#[derive(Default)]
pub(super) struct LocalElections {
    /// Per election: its members in joining order.
    elections: Mutex<HashMap<String, watch::Sender<Vec<Ticket>>>>,
    tickets: std::sync::atomic::AtomicU64,
}

impl LocalElections {
    pub(super) fn campaign(self: &Arc<Self>, name: &str, candidate: &str) -> Campaign {
        let ticket = self
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let members = {
            let mut elections = self.elections.lock().unwrap_or_else(|e| e.into_inner());
            elections
                .entry(name.to_owned())
                .or_insert_with(|| watch::channel(Vec::new()).0)
                .clone()
        };
        members.send_modify(|m| m.push((ticket, candidate.to_owned())));
        let candidate = candidate.to_owned();
        Campaign::spawn(move |standing, mut resigned| async move {
            let mut changes = members.subscribe();
            loop {
                let now = changes
                    .borrow_and_update()
                    .iter()
                    .map(|(_, c)| c.clone())
                    .collect();
                standing.send_replace(Standing::among(now, &candidate, ticket + 1));
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = resigned.changed() => break,
                }
            }
            members.send_modify(|m| m.retain(|(t, _)| *t != ticket));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn wait_for(campaign: &Campaign, test: impl Fn(&Standing) -> bool) -> Standing {
        let mut standing = campaign.standing();
        let waited = tokio::time::timeout(Duration::from_secs(5), standing.wait_for(test)).await;
        let seen: Standing = waited.expect("standing in time").expect("open").clone();
        seen
    }

    #[tokio::test]
    async fn first_member_leads_and_the_next_takes_over_when_it_resigns() {
        let elections = Arc::new(LocalElections::default());
        let a = elections.campaign("singletons", "a");
        let b = elections.campaign("singletons", "b");
        let other = elections.campaign("elsewhere", "c");
        let seen = wait_for(&b, |s| s.members.len() == 2).await;
        assert_eq!(seen.leader.as_deref(), Some("a"));
        assert!(!seen.leading);
        assert!(wait_for(&a, |s| s.leading).await.leading);
        assert!(wait_for(&other, |s| s.leading).await.members == ["c"]);

        drop(a);
        let seen = wait_for(&b, |s| s.leading).await;
        assert_eq!(seen.members, ["b"]);
    }

    #[test]
    fn a_sole_candidate_leads() {
        let campaign = Campaign::sole("only");
        let standing = campaign.standing().borrow().clone();
        assert!(standing.leading);
        assert_eq!(standing.members, ["only"]);
    }
}
