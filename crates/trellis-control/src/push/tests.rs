//! The push service's own bookkeeping, without gRPC: what it restores after this
//! replica dropped out of the election.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use trellis_api::proto::v1::{Hello, Workload};

use super::{session, PushService, PushSettings};
use crate::ca::{CaSettings, MeshCa};
use crate::leader::Replica;
use crate::registry::Registry;
use crate::store::{Expect, MemoryStore, Standing, Store};

const TOKEN: &str = "admin";

fn standing(members: &[&str], term: u64) -> Standing {
    let members = members
        .iter()
        .map(|instance| {
            let replica = Replica {
                instance: (*instance).to_owned(),
                http: String::new(),
                grpc: String::new(),
            };
            serde_json::to_string(&replica).expect("json")
        })
        .collect();
    Standing {
        leading: false,
        leader: None,
        members,
        term,
    }
}

#[tokio::test]
async fn a_replica_that_rejoins_restores_its_live_sessions_workloads() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ca = Arc::new(MeshCa::ephemeral(store.clone(), CaSettings::default()).expect("ca"));
    let push = PushService::new(
        store.clone(),
        Arc::new(Registry::new()),
        ca,
        PushSettings::new(TOKEN.into()),
    );
    let hello = Hello {
        token: TOKEN.into(),
        workload: Some(Workload {
            name: "books-1".into(),
            namespace: "shop".into(),
            service: "books".into(),
            address: "127.0.0.1".into(),
            inbound_port: 7143,
            app_port: 8080,
            ..Default::default()
        }),
        proxy_version: "test".into(),
        serving_version: 0,
        admin_address: String::new(),
        accepts_delta: false,
    };
    session::register(&push.inner, &hello)
        .await
        .expect("registered");
    let key = "/resources/Workload/shop/books-1";
    let me = push.instance().to_owned();

    let (tx, rx) = watch::channel(standing(&[&me], 1));
    let restorer = tokio::spawn(push.restore_on_rejoin(rx));
    // This replica drops out; the leader takes it for dead and removes the workload.
    tx.send_replace(standing(&["other"], 0));
    store.delete(key, Expect::Any).await.expect("delete");
    // Back in the election: the proxy, still connected here, gets its workload back.
    tx.send_replace(standing(&["other", &me], 2));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.get(key).await.expect("get").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "never restored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    restorer.abort();
    push.stop();
}
