//! The etcd store against real clusters: members failing and coming back, quorum lost
//! and regained, a restart on the same data, and credentials. The store contract itself
//! is checked in `mod.rs` like every other store's.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use tokio::time::Instant;
use trellis_testkit::etcd::{EtcdCluster, EtcdTlsFiles};

use super::{next, put, revisions, until_key};
use crate::store::etcd::{EtcdAuth, EtcdTls};
use crate::store::{EtcdSettings, EtcdStore, Expect, Store, StoreError};

/// Short, so that the cases where etcd cannot answer end quickly.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

async fn connect(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::connect(settings(cluster))
        .await
        .expect("connect to etcd")
}

fn settings(cluster: &EtcdCluster) -> EtcdSettings {
    let mut settings = EtcdSettings::new(cluster.endpoints());
    settings.request_timeout = REQUEST_TIMEOUT;
    settings.connect_timeout = REQUEST_TIMEOUT;
    settings
}

async fn ready(cluster: &mut EtcdCluster) {
    if let Err(why) = cluster.wait_ready().await {
        panic!("etcd did not recover: {why}");
    }
}

/// An operation that cannot succeed fails with `Unavailable`, in about the request
/// timeout and never much later.
fn assert_unavailable_in_time<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, StoreError>,
    started: Instant,
) {
    let took = started.elapsed();
    match result {
        Err(error @ StoreError::Unavailable { .. }) => {
            assert!(
                took < REQUEST_TIMEOUT + Duration::from_secs(2),
                "{what} took {took:?} to fail: {error}"
            );
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_ride_out_one_loss_and_fail_cleanly_without_quorum() {
    let mut cluster = EtcdCluster::start(3).await;
    let store = connect(&cluster).await;
    let start = store.revision().await.expect("revision");
    let mut watch = store.watch("k/", start).await.expect("watch");
    let mut written = Vec::new();

    // Each member in turn is killed and brought back, so the watch's own member and the
    // leader are among those lost at some point. Once the others have a leader (at once
    // for a follower, after an election for the leader), writes and the watch carry on.
    for member in 0..3 {
        cluster.kill(member);
        ready(&mut cluster).await;
        for i in 0..5 {
            let revision = put(&store, &format!("k/{member}-{i}"), "v").await;
            written.push(revision);
        }
        let (entries, _) = store.list("k/").await.expect("list with a member down");
        assert_eq!(entries.len(), written.len(), "member {member} down");
        cluster.restart(member);
        ready(&mut cluster).await;
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        seen.push(next(&mut watch).await.revision());
    }
    assert_eq!(seen, written, "the watch saw every write once, in order");

    // Two of three gone: no quorum. Writes and reads fail with Unavailable in bounded
    // time, and so does the watch once its member notices it has no leader.
    cluster.kill(0);
    cluster.kill(1);
    let started = Instant::now();
    let write = store.put("k/lost", b"v".to_vec(), Expect::Any).await;
    assert_unavailable_in_time("a write without quorum", write, started);
    let started = Instant::now();
    let read = store.get("k/lost").await;
    assert_unavailable_in_time("a read without quorum", read, started);
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch ends once the cluster has no leader");
    let ended = match ended {
        Ok(event) => panic!("an event without quorum: {event:?}"),
        Err(error) => error,
    };
    assert!(ended.is_unavailable(), "{ended}");

    // Quorum back: the same store works again, and a new watch resumes where the list
    // left off.
    cluster.restart(0);
    cluster.restart(1);
    ready(&mut cluster).await;
    let (entries, at) = store.list("k/").await.expect("list after recovery");
    assert_eq!(entries.len(), written.len());
    let mut watch = store.watch("k/", at).await.expect("watch after recovery");
    let revision = put(&store, "k/back", "v").await;
    assert!(revision > at);
    let event = next(&mut watch).await;
    assert_eq!((event.key(), event.revision()), ("k/back", revision));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revisions_survive_a_restart_of_etcd() {
    let mut cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let base = store.revision().await.expect("revision");
    put(&store, "svc/a", "1").await;
    put(&store, "svc/b", "2").await;
    put(&store, "svc/a", "3").await;
    store.delete("svc/b", Expect::Any).await.expect("delete");

    cluster.restart(0);
    ready(&mut cluster).await;

    // The store that was open before reconnects by itself; a new one sees the same.
    let reopened = connect(&cluster).await;
    for store in [&store, &reopened] {
        assert_eq!(store.revision().await.expect("revision"), base + 4);
        let (entries, revision) = store.list("svc/").await.expect("list");
        assert_eq!(revision, base + 4);
        let a = &entries[..];
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].key.as_str(), &a[0].value[..]), ("svc/a", &b"3"[..]));
        assert_eq!((a[0].revision, a[0].create_revision), (base + 3, base + 1));
    }
    let mut history = reopened.watch("svc/", base).await.expect("watch");
    assert_eq!(put(&reopened, "svc/c", "5").await, base + 5);
    assert_eq!(
        revisions(&until_key(&mut history, "svc/c").await),
        [base + 1, base + 2, base + 3, base + 4, base + 5]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn meshes_sharing_a_cluster_see_only_their_own_keys() {
    let cluster = EtcdCluster::start(1).await;
    let mut a = settings(&cluster);
    a.prefix = "/mesh-a".to_owned();
    let mut b = settings(&cluster);
    b.prefix = "/mesh-a-b/".to_owned();
    let a = EtcdStore::connect(a).await.expect("connect a");
    let b = EtcdStore::connect(b).await.expect("connect b");
    assert_eq!((a.prefix(), b.prefix()), ("/mesh-a/", "/mesh-a-b/"));

    let mut watch_a = a
        .watch("", a.revision().await.expect("revision"))
        .await
        .expect("watch");
    put(&b, "k", "from b").await;
    let written = put(&a, "k", "from a").await;
    let event = next(&mut watch_a).await;
    assert_eq!((event.key(), event.revision()), ("k", written));
    let (entries, _) = a.list("").await.expect("list");
    assert_eq!(entries.len(), 1);
    assert_eq!(&entries[0].value[..], b"from a");
    // The cluster's revision is shared: b's write counts in a's revision too.
    assert_eq!(
        a.revision().await.expect("revision"),
        b.revision().await.expect("revision")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_are_used_and_a_wrong_password_is_refused() {
    let cluster = EtcdCluster::start(1).await;
    let mut admin = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    admin
        .user_add("root", "root-secret", None)
        .await
        .expect("add root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.auth_enable().await.expect("enable auth");

    let with = |password: &str| {
        let mut settings = settings(&cluster);
        settings.auth = Some(EtcdAuth {
            user: "root".to_owned(),
            password: password.to_owned(),
        });
        settings
    };
    let store = EtcdStore::connect(with("root-secret"))
        .await
        .expect("connect as root");
    let revision = put(&store, "k", "v").await;
    let entry = store.get("k").await.expect("get").expect("k");
    assert_eq!(entry.revision, revision);

    let started = Instant::now();
    let refused = EtcdStore::connect(with("wrong"))
        .await
        .expect_err("a wrong password");
    assert!(
        matches!(refused, StoreError::Backend { .. }),
        "refused, not unavailable: {refused:?}"
    );
    assert!(
        refused.to_string().contains("authentication failed"),
        "{refused}"
    );
    assert!(started.elapsed() < REQUEST_TIMEOUT, "refused at once");

    let anonymous = EtcdStore::connect(settings(&cluster)).await;
    assert!(anonymous.is_err(), "without credentials: {anonymous:?}");
}

#[tokio::test]
async fn no_cluster_at_the_endpoints_is_unavailable_in_time() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut settings = EtcdSettings::new(vec![format!("127.0.0.1:{port}")]);
    settings.request_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = EtcdStore::connect(settings)
        .await
        .expect_err("nothing there");
    assert!(error.is_unavailable(), "{error:?}");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_client_certificates() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = |name: &str| dir.path().join(name);
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    // One certificate for 127.0.0.1 serves both ends: etcd's server and this client.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca).expect("certificate");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        std::fs::write(path(name), pem).expect("write PEM");
    }
    let files = EtcdTlsFiles {
        ca: path("ca.pem"),
        cert: path("cert.pem"),
        key: path("key.pem"),
        client_cert_auth: true,
    };
    let cluster = EtcdCluster::start_with(1, Some(files)).await;

    let with = |identity| {
        let mut settings = settings(&cluster);
        settings.tls = Some(EtcdTls {
            ca: path("ca.pem"),
            identity,
        });
        settings
    };
    let store = EtcdStore::connect(with(Some((path("cert.pem"), path("key.pem")))))
        .await
        .expect("connect over TLS");
    let revision = put(&store, "k", "v").await;
    assert_eq!(
        store.get("k").await.expect("get").map(|e| e.revision),
        Some(revision)
    );

    let refused = EtcdStore::connect(with(None)).await;
    assert!(
        refused.is_err(),
        "without a client certificate: {refused:?}"
    );
    let plaintext = EtcdStore::connect(settings(&cluster)).await;
    assert!(plaintext.is_err(), "in plaintext: {plaintext:?}");
}

/// Waits for a campaign's standing to pass `test`, for at most `within`.
async fn standing_within(
    campaign: &crate::store::Campaign,
    within: Duration,
    test: impl Fn(&crate::store::Standing) -> bool,
) -> crate::store::Standing {
    let mut standing = campaign.standing();
    let seen = match tokio::time::timeout(within, standing.wait_for(test)).await {
        Ok(Ok(seen)) => seen.clone(),
        _ => panic!(
            "standing not reached; last: {:?}",
            campaign.standing().borrow()
        ),
    };
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_oldest_candidate_leads_and_the_next_takes_over() {
    let mut cluster = EtcdCluster::start(3).await;
    let mut short = settings(&cluster);
    short.lease_ttl = Duration::from_secs(2);
    let a_store = EtcdStore::connect(short.clone()).await.expect("connect");
    let b_store = EtcdStore::connect(short.clone()).await.expect("connect");
    let lease = short.lease_ttl;

    let a = a_store.campaign("singletons", "a");
    standing_within(&a, lease * 2, |s| s.leading).await;
    let b = b_store.campaign("singletons", "b");
    let seen = standing_within(&b, lease * 2, |s| s.members.len() == 2).await;
    assert_eq!(seen.leader.as_deref(), Some("a"));
    assert!(!seen.leading, "only the oldest member leads");

    // A resigning leader revokes its lease: the next one leads without waiting for it.
    drop(a);
    let seen = standing_within(&b, lease * 2, |s| s.leading).await;
    assert_eq!(seen.members, ["b"]);

    // A leader that dies without resigning is replaced once its lease runs out.
    let c_store = EtcdStore::connect(short.clone()).await.expect("connect");
    let c = c_store.campaign("singletons", "c");
    standing_within(&c, lease * 2, |s| s.members.len() == 2).await;
    b.abandon();
    standing_within(&c, lease * 3, |s| s.leading).await;

    // Without a quorum nobody can be sure of its lease: the leader steps down within the
    // lease, and leads again once the quorum is back.
    cluster.kill(1);
    cluster.kill(2);
    standing_within(&c, lease * 2, |s| !s.leading).await;
    cluster.restart(1);
    cluster.restart(2);
    ready(&mut cluster).await;
    standing_within(&c, Duration::from_secs(20), |s| s.leading).await;
}
