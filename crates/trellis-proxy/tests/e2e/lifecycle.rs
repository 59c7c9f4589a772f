//! Drain, reload and the admin server.

use std::time::Duration;

use http::StatusCode;
use trellis_proxy::{Prebound, Proxy, ProxyConfig};
use trellis_testkit::assert_eventually;
use trellis_testkit::http::{HttpClient, HttpServer, ServerProtocol};
use trellis_testkit::load::run_load_until;

use super::{addr, simple, start, url};

fn config_for(server: std::net::SocketAddr) -> ProxyConfig {
    let yaml = simple("auto", "http1", &[server], "") + "admin: 127.0.0.1:0\n";
    ProxyConfig::from_yaml(&yaml).expect("valid")
}

#[tokio::test]
async fn drain_finishes_requests_in_flight_and_stops_accepting() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let admin = format!("http://{}/ready", proxy.admin_addr());
    let client = HttpClient::http1();
    assert_eq!(
        client.get(&admin).await.expect("ready").status,
        StatusCode::OK
    );

    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (HttpClient::http1(), url(&proxy, "/delay/500"));
            tokio::spawn(async move { client.get(&url).await })
        })
        .collect();
    assert_eventually!(server.requests() == 5);

    let listen_addr = addr(&proxy);
    let (left, ()) = tokio::join!(proxy.shutdown(), async {
        assert_eventually!(client.get(&admin).await.map(|r| r.status).ok() != Some(StatusCode::OK));
    });
    assert_eq!(left, 0, "connections left open after drain");
    for request in in_flight {
        let resp = request
            .await
            .expect("task")
            .expect("in-flight request completes");
        assert_eq!(resp.status, StatusCode::OK);
    }
    assert!(
        tokio::net::TcpStream::connect(listen_addr).await.is_err(),
        "still accepting after drain"
    );
}

#[tokio::test]
async fn reload_under_load_fails_no_request() {
    let blue = HttpServer::start("blue", ServerProtocol::Http1)
        .await
        .expect("server");
    let green = HttpServer::start("green", ServerProtocol::Http2)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[blue.addr()], "")).await;
    let target = url(&proxy, "/delay/2");
    let blue_config = config_for(blue.addr());
    let green_yaml = simple("auto", "http2", &[green.addr()], "") + "admin: 127.0.0.1:0\n";
    let green_config = ProxyConfig::from_yaml(&green_yaml).expect("valid");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(run_load_until(
        HttpClient::http1(),
        target.clone(),
        8,
        20_000,
        stop_rx,
    ));
    for i in 0..10 {
        let before = blue.requests() + green.requests();
        assert_eventually!(blue.requests() + green.requests() >= before + 20);
        let next = if i % 2 == 0 {
            &green_config
        } else {
            &blue_config
        };
        proxy.reload(next.clone()).await.expect("reload");
    }
    stop_tx.send(true).expect("stop load");
    let report = load.await.expect("load task");
    assert_eq!(
        report.failed, 0,
        "failures during reload: {:?}",
        report.errors
    );
    assert!(report.ok > 200, "only {} requests ran", report.ok);
    assert!(green.requests() > 0 && blue.requests() > 0);
    // The last reload switched back to blue: new requests go there.
    let resp = HttpClient::http1().get(&target).await.expect("response");
    assert_eq!(resp.headers["x-served-by"], "blue");
}

#[tokio::test]
async fn bad_reload_is_refused_and_the_old_config_keeps_serving() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let mut broken = config_for(server.addr());
    broken.listeners[0].routes[0].backend = Some("missing".into());
    let err = proxy.reload(broken).await.expect_err("refused");
    assert!(
        err.to_string().contains("no backend named \"missing\""),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("trellis-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "listeners: [").expect("write");
    assert!(proxy.reload_file(&path).await.is_err());

    let resp = HttpClient::http1()
        .get(&url(&proxy, "/"))
        .await
        .expect("response");
    assert_eq!(resp.text(), "hello from app\n");
    let metrics = proxy.metrics().encode();
    assert!(
        metrics.contains("trellis_config_reloads_total{result=\"failure\"} 2"),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reload_adds_and_removes_listeners_keeping_open_connections() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let client = HttpClient::http1();
    let old_url = url(&proxy, "/");
    assert_eq!(
        client.get(&old_url).await.expect("response").status,
        StatusCode::OK
    );

    let mut next = config_for(server.addr());
    next.listeners[0].name = "web2".into();
    proxy.reload(next).await.expect("reload");
    let new_addr = proxy.listener_addr("web2").expect("new listener bound");
    assert!(proxy.listener_addr("web").is_none());
    let resp = client
        .get(&format!("http://{new_addr}/"))
        .await
        .expect("new listener");
    assert_eq!(resp.status, StatusCode::OK);
    // The client's pooled connection to the removed listener still works.
    assert_eq!(
        client.get(&old_url).await.expect("old connection").status,
        StatusCode::OK
    );
    assert_eq!(proxy.effective_config().listeners[0].address, new_addr);
}

#[tokio::test]
async fn admin_serves_live_ready_metrics_and_config() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let proxy = start(&simple("auto", "http1", &[server.addr()], "")).await;
    let client = HttpClient::http1();
    client.get(&url(&proxy, "/")).await.expect("one request");
    let admin = |path: &str| format!("http://{}{path}", proxy.admin_addr());

    assert_eq!(
        client.get(&admin("/live")).await.expect("live").status,
        StatusCode::OK
    );
    assert_eq!(
        client.get(&admin("/ready")).await.expect("ready").status,
        StatusCode::OK
    );
    let metrics = client
        .get(&admin("/metrics"))
        .await
        .expect("metrics")
        .text();
    for want in [
        r#"trellis_requests_total{direction="outbound",listener="web",route="0",backend="app",peer_identity="",tls="false",status="200",class="2xx",grpc_status="",error=""} 1"#,
        r#"trellis_request_duration_seconds_count{listener="web",route="0",backend="app"} 1"#,
        r#"trellis_connections_total{listener="web",protocol="http1"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let config: serde_json::Value =
        serde_json::from_slice(&client.get(&admin("/config")).await.expect("config").body)
            .expect("json");
    assert_eq!(config["listeners"][0]["address"], addr(&proxy).to_string());
    assert_eq!(config["backends"][0]["loadBalancer"], "ewma");
    assert_eq!(
        client.get(&admin("/nope")).await.expect("404").status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn drain_gives_up_at_the_deadline() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let yaml = simple("auto", "http1", &[server.addr()], "") + "drainTimeout: 300ms\n";
    let proxy = start(&yaml).await;
    let stuck = tokio::spawn({
        let url = url(&proxy, "/delay/10000");
        async move { HttpClient::http1().get(&url).await }
    });
    assert_eventually!(server.requests() == 1);
    let left = tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
        .await
        .expect("shutdown returns at its deadline");
    assert_eq!(left, 1);
    stuck.abort();
}

/// A socket bound before the proxy starts serves the listener a later configuration
/// names at its address, without a second bind (which its own open socket would make
/// fail with "address in use"), and keeps serving across the next reloads; a reload
/// refused for another listener gives it back for the next one.
#[tokio::test]
async fn a_prebound_socket_serves_the_listener_named_at_its_address() {
    let server = HttpServer::start("app", ServerProtocol::Http1)
        .await
        .expect("server");
    let mut prebound = Prebound::default();
    let bound = prebound.bind(addr_0()).expect("bind");
    assert_ne!(bound.port(), 0);
    let proxy = Proxy::start_with(config_for(server.addr()), prebound)
        .await
        .expect("proxy starts");
    // The port is held from the start: nothing else can bind it.
    assert!(std::net::TcpListener::bind(bound).is_err());

    let with_listener_at = |extra: &[(&str, std::net::SocketAddr)]| {
        let mut next = config_for(server.addr());
        for (name, address) in extra {
            let mut listener = next.listeners[0].clone();
            listener.name = (*name).into();
            listener.address = *address;
            next.listeners.push(listener);
        }
        next
    };
    // A reload that also needs an address another socket holds is refused whole.
    let taken = std::net::TcpListener::bind(addr_0()).expect("bind");
    let taken = taken.local_addr().expect("address");
    let refused = with_listener_at(&[("held", bound), ("taken", taken)]);
    assert!(proxy.reload(refused).await.is_err());
    assert!(proxy.listener_addr("held").is_none());

    proxy
        .reload(with_listener_at(&[("held", bound)]))
        .await
        .expect("the prebound socket is taken, not bound again");
    assert_eq!(proxy.listener_addr("held"), Some(bound));
    let client = HttpClient::http1();
    let url = format!("http://{bound}/");
    assert_eq!(
        client.get(&url).await.expect("served").status,
        StatusCode::OK
    );

    // A reload that keeps the listener keeps its socket and the open connection.
    let mut next = with_listener_at(&[("held", bound)]);
    next.listeners[0].name = "web2".into();
    proxy.reload(next).await.expect("reload");
    assert_eq!(proxy.listener_addr("held"), Some(bound));
    assert_eq!(
        client.get(&url).await.expect("still served").status,
        StatusCode::OK
    );
}

fn addr_0() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}
