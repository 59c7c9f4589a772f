//! Transparent mode: the original-destination listener, its targets and the Service
//! table for DNS.

use std::net::Ipv4Addr;

use trellis_api::proto::v1::{EgressMode, ListenerProtocol};
use trellis_api::service::WorkloadPort;

use super::*;
use crate::compile::ServiceKey;
use crate::vip::VipTable;

const MESH: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: db, namespace: shop}
spec:
  selector: {app: db}
  ports: [{port: 3306, appProtocol: tcp}]
"#;

const REGISTRY_ONLY: &str =
    "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {egress: {mode: registryOnly}}\n";

fn with_app_port(mut w: Resource, port: u16) -> Resource {
    if let Spec::Workload(spec) = &mut w.spec {
        spec.ports = vec![WorkloadPort {
            name: None,
            port,
            app_protocol: None,
        }];
    }
    w
}

fn mesh(extra: &str) -> Vec<Resource> {
    let mut resources = yaml(&format!("{MESH}{extra}"));
    resources.push(with_app_port(
        workload(
            "shop",
            "books-1",
            &[("app", "books")],
            "10.0.0.7",
            Some(true),
        ),
        8080,
    ));
    resources.push(workload("shop", "db-1", &[("app", "db")], "10.0.0.8", None));
    resources
}

fn compile_with_vips(resources: &[Resource], proxy: &Workload) -> ProxyConfig {
    let mut index = MeshIndex::new(&MeshState::new(resources.to_vec()));
    let vips: VipTable = [
        (
            ServiceKey::new("shop", "books"),
            Ipv4Addr::new(240, 240, 0, 7),
        ),
        (ServiceKey::new("shop", "db"), Ipv4Addr::new(240, 240, 0, 8)),
    ]
    .into();
    index.set_vips(vips);
    let config = index.compile(proxy);
    assert_acceptable(&config);
    config
}

pub(super) fn transparent_proxy() -> Workload {
    let mut proxy = proxy("shop", "web", 8080, &[]);
    proxy.outbound_port = 7140;
    proxy
}

#[test]
fn destinations_map_to_their_services_listeners() {
    let config = compile_with_vips(&mesh(""), &transparent_proxy());
    let outbound = listener(&config, "outbound");
    assert_eq!(outbound.address, "127.0.0.1:7140");
    assert!(outbound.routes.is_empty());
    let table = outbound
        .original_destination
        .as_ref()
        .expect("an original-destination table");
    assert_eq!(table.egress, EgressMode::AllowAny as i32);
    // (listener or `sidecar <address> <identity>`, addresses)
    let targets: Vec<(String, Vec<String>)> = table
        .targets
        .iter()
        .map(|t| {
            let to = match &t.workload {
                Some(w) => format!("sidecar {} {}", w.address, w.identity),
                None => t.listener.clone(),
            };
            (to, t.addresses.clone())
        })
        .collect();
    let target = |to: &str, addresses: &[&str]| {
        (
            to.to_string(),
            addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        targets,
        [
            target("transparent-shop-books", &["240.240.0.7"]),
            target("transparent-shop-db", &["240.240.0.8"]),
            // A workload's own address goes to that workload, not to its Services.
            target(
                "sidecar 10.0.0.7:7143 spiffe://trellis.local/ns/shop/sa/default",
                &["10.0.0.7:8080"]
            ),
            target(
                "sidecar 10.0.0.8:7143 spiffe://trellis.local/ns/shop/sa/default",
                &["10.0.0.8:8080"]
            ),
        ]
    );
    let books = listener(&config, "transparent-shop-books");
    assert!(books.unbound);
    assert_eq!(books.protocol, ListenerProtocol::Auto as i32);
    assert_eq!(routes(books), ["default | * | books.shop=1"]);
    let db = listener(&config, "transparent-shop-db");
    assert_eq!(db.protocol, ListenerProtocol::Tcp as i32);
    assert_eq!(endpoints(backend(&config, "db.shop")), ["10.0.0.8:7143"]);

    let services: Vec<(&str, &str, &str)> = config
        .services
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str(), s.virtual_ip.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("shop", "books", "240.240.0.7"),
            ("shop", "db", "240.240.0.8")
        ]
    );
}

#[test]
fn registry_only_is_compiled_into_the_table() {
    let config = compile_with_vips(
        &mesh(&format!("---\n{REGISTRY_ONLY}")),
        &transparent_proxy(),
    );
    let table = listener(&config, "outbound")
        .original_destination
        .clone()
        .expect("an original-destination table");
    assert_eq!(table.egress, EgressMode::RegistryOnly as i32);
}

#[test]
fn explicit_proxies_get_no_transparent_listener() {
    let config = compile_with_vips(&mesh(""), &proxy("shop", "web", 8080, &[]));
    assert!(config.listeners.iter().all(|l| l.name != "outbound"));
    assert!(config.services.is_empty());
}

#[test]
fn mesh_wide_tracing_reaches_every_sidecar_named_by_its_service() {
    let tracing = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {tracing: {sampling: 0.25, otlp: {endpoint: \"http://10.0.0.9:4318\", protocol: http}}}\n";
    let resources = yaml(tracing);
    let config = compile(&resources, &proxy("shop", "books", 8080, &[]));
    let tracing = config.tracing.expect("tracing");
    assert_eq!(tracing.endpoint, "http://10.0.0.9:4318");
    assert_eq!(tracing.protocol, "http");
    assert_eq!(tracing.sampling, 0.25);
    assert_eq!(tracing.service_name, "books");
    // Without it in the MeshConfig, nothing traces.
    let plain = compile(&[], &proxy("shop", "books", 8080, &[]));
    assert!(plain.tracing.is_none());
}

#[test]
fn access_logs_reach_the_listed_services_with_their_own_settings() {
    let mesh = "apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec:\n  metrics: {maxRequestSeries: 500}\n  accessLog:\n    format: json\n    services:\n      - {name: web}\n      - {name: books, namespace: shop, format: text, output: /var/log/books.log}\n";
    let resources = yaml(mesh);
    let books = compile(&resources, &proxy("shop", "books", 8080, &[]));
    let log = books.access_log.expect("books logs");
    assert_eq!(
        (log.format.as_str(), log.output.as_str()),
        ("text", "/var/log/books.log")
    );
    assert_eq!(books.max_request_series, 500);
    // `web` is listed in the default namespace only.
    let web = compile(&resources, &proxy("default", "web", 8080, &[]));
    let log = web.access_log.expect("web logs");
    assert_eq!(
        (log.format.as_str(), log.output.as_str()),
        ("json", "stdout")
    );
    assert!(compile(&resources, &proxy("shop", "web", 8080, &[]))
        .access_log
        .is_none());
    // Without a list every sidecar logs; without accessLog none does.
    let everyone = yaml("apiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {name: default}\nspec: {accessLog: {}}\n");
    assert!(compile(&everyone, &proxy("shop", "ratings", 8080, &[]))
        .access_log
        .is_some());
    let plain = compile(&[], &proxy("shop", "ratings", 8080, &[]));
    assert!(plain.access_log.is_none());
    assert_eq!(plain.max_request_series, 0);
}
