//! ExternalServices: the egress listeners, backends, original-destination targets and
//! DNS entries a transparent proxy gets for hosts outside the mesh.

use std::net::Ipv4Addr;

use trellis_api::proto::v1::ListenerProtocol;

use super::transparent::transparent_proxy;
use super::*;
use crate::compile::external_host_key as host_key;
use crate::compile::ServiceKey;
use crate::vip::VipTable;

const PAYMENTS: &str = r#"
apiVersion: trellis.dev/v1alpha1
kind: ExternalService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  ports:
    - {port: 443, protocol: tls}
    - {port: 80, protocol: https, targetPort: 443}
  tls: {caFile: /etc/trellis/payments-ca.pem}
---
apiVersion: trellis.dev/v1alpha1
kind: ExternalService
metadata: {name: ledger, namespace: finance}
spec:
  hosts: [ledger.example]
  ports: [{port: 5432, protocol: tcp}, {port: 8080, protocol: http}]
  resolution: static
  addresses: [192.0.2.10, 192.0.2.11]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: books, namespace: shop}
spec:
  selector: {app: books}
  ports: [{port: 8080}]
"#;

fn compile_with_vips(resources: &[Resource], proxy: &Workload) -> ProxyConfig {
    let mut index = MeshIndex::new(&MeshState::new(resources.to_vec()));
    let keys: Vec<ServiceKey> = index.external_host_keys().cloned().collect();
    assert_eq!(
        keys,
        [host_key("api.payments.example"), host_key("ledger.example")]
    );
    let vips: VipTable = [
        (
            ServiceKey::new("shop", "books"),
            Ipv4Addr::new(240, 240, 0, 7),
        ),
        (keys[0].clone(), Ipv4Addr::new(240, 240, 1, 1)),
        (keys[1].clone(), Ipv4Addr::new(240, 240, 1, 2)),
    ]
    .into();
    index.set_vips(vips);
    let config = index.compile(proxy);
    assert_acceptable(&config);
    config
}

#[test]
fn external_hosts_get_dns_entries_targets_and_egress_listeners() {
    let config = compile_with_vips(&yaml(PAYMENTS), &transparent_proxy());
    let hosts: Vec<(&str, &str)> = config
        .external_hosts
        .iter()
        .map(|h| (h.host.as_str(), h.virtual_ip.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("api.payments.example", "240.240.1.1"),
            ("ledger.example", "240.240.1.2")
        ]
    );

    let table = listener(&config, "outbound")
        .original_destination
        .as_ref()
        .expect("an original-destination table");
    let targets: Vec<(&str, Vec<&str>)> = table
        .targets
        .iter()
        .map(|t| {
            let addresses = t.addresses.iter().map(String::as_str).collect();
            (t.listener.as_str(), addresses)
        })
        .collect();
    assert_eq!(
        targets,
        [
            // The mesh's Services first: they keep an address they share.
            ("transparent-shop-books", vec!["240.240.0.7"]),
            (
                "egress-finance-ledger-ledger.example-5432",
                vec!["240.240.1.2:5432", "192.0.2.10:5432", "192.0.2.11:5432"]
            ),
            (
                "egress-finance-ledger-ledger.example-8080",
                vec!["240.240.1.2:8080", "192.0.2.10:8080", "192.0.2.11:8080"]
            ),
            (
                "egress-shop-payments-api.payments.example-443",
                vec!["240.240.1.1:443"]
            ),
            (
                "egress-shop-payments-api.payments.example-80",
                vec!["240.240.1.1:80"]
            ),
        ]
    );
}

#[test]
fn each_port_says_how_its_calls_leave() {
    let config = compile_with_vips(&yaml(PAYMENTS), &transparent_proxy());

    // tls: the application's TLS, routed by server name, to the resolved host.
    let tls = listener(&config, "egress-shop-payments-api.payments.example-443");
    assert!(tls.unbound && tls.egress);
    assert_eq!(tls.protocol, ListenerProtocol::Tls as i32);
    assert_eq!(
        routes(tls),
        ["api.payments.example | host:api.payments.example | egress-shop-payments-api.payments.example-443=1"]
    );
    let b = backend(&config, "egress-shop-payments-api.payments.example-443");
    assert_eq!(endpoints(b), ["0.0.0.0:443"]);
    assert_eq!(b.endpoints[0].hostname, "api.payments.example");
    assert_eq!(b.originate_tls, None);

    // https: plain HTTP in, TLS opened by the proxy to port 443, named after the host.
    let https = listener(&config, "egress-shop-payments-api.payments.example-80");
    assert_eq!(https.protocol, ListenerProtocol::Http1 as i32);
    let b = backend(&config, "egress-shop-payments-api.payments.example-80");
    assert_eq!(endpoints(b), ["0.0.0.0:443"]);
    assert_eq!(b.protocol, http1());
    let tls = b.originate_tls.as_ref().expect("origination");
    assert_eq!(tls.server_name, "api.payments.example");
    assert_eq!(tls.ca_file, "/etc/trellis/payments-ca.pem");
    assert_eq!(tls.ca_pem, "");

    // static: the listed addresses; tcp: no host to match, the dialled address decides.
    let tcp = listener(&config, "egress-finance-ledger-ledger.example-5432");
    assert_eq!(tcp.protocol, ListenerProtocol::Tcp as i32);
    assert_eq!(tcp.routes[0].r#match, None);
    let b = backend(&config, "egress-finance-ledger-ledger.example-5432");
    assert_eq!(endpoints(b), ["192.0.2.10:5432", "192.0.2.11:5432"]);
    assert!(b.endpoints.iter().all(|e| e.hostname.is_empty()));
    let http = listener(&config, "egress-finance-ledger-ledger.example-8080");
    assert_eq!(http.protocol, ListenerProtocol::Http1 as i32);
    assert_eq!(
        backend(&config, "egress-finance-ledger-ledger.example-8080").originate_tls,
        None
    );
}

#[test]
fn proxies_without_capture_or_http_proxy_get_no_external_services() {
    let config = compile_with_vips(&yaml(PAYMENTS), &proxy("shop", "web", 8080, &[]));
    assert!(config.external_hosts.is_empty());
    assert!(config.listeners.iter().all(|l| !l.egress));
    assert!(config.backends.iter().all(|b| b.originate_tls.is_none()));
}

#[test]
fn listener_and_backend_names_come_from_one_place() {
    let config = compile_with_vips(&yaml(PAYMENTS), &transparent_proxy());
    let name = crate::compile::egress_name(
        &ServiceKey::new("shop", "payments"),
        "api.payments.example",
        80,
    );
    assert_eq!(name, "egress-shop-payments-api.payments.example-80");
    assert!(listener(&config, &name).egress);
    assert!(backend(&config, &name).originate_tls.is_some());
    // A long host still makes a name the proxy accepts, and a stable one.
    let long = "a".repeat(60) + ".example";
    let key = ServiceKey::new("shop", "payments");
    let first = crate::compile::egress_name(&key, &long, 443);
    assert!(is_valid_name(&first), "{first}");
    assert_eq!(first, crate::compile::egress_name(&key, &long, 443));
}

#[test]
fn the_http_proxy_reaches_every_port_by_host_and_tls_and_tcp_by_tunnel_only() {
    let mut explicit = proxy("shop", "web", 8080, &[]);
    explicit.http_proxy_port = 7150;
    let config = compile_with_vips(&yaml(PAYMENTS), &explicit);
    let l = listener(&config, "http-proxy");
    // allowAny: an unknown host is a 404, not a refusal.
    assert!(!l.egress);
    assert_eq!(
        routes(l),
        [
            "egress-finance-ledger-ledger.example-5432 | host:ledger.example:5432 | egress-finance-ledger-ledger.example-5432=1",
            "egress-finance-ledger-ledger.example-8080 | host:ledger.example:8080 | egress-finance-ledger-ledger.example-8080=1",
            "egress-shop-payments-api.payments.example-443 | host:api.payments.example:443 | egress-shop-payments-api.payments.example-443=1",
            "egress-shop-payments-api.payments.example-80 | host:api.payments.example,api.payments.example:80 | egress-shop-payments-api.payments.example-80=1",
        ]
    );
    let b = backend(&config, "egress-shop-payments-api.payments.example-80");
    assert!(b.originate_tls.is_some());
    // The tls port is a tunnel's: the client's own TLS passes through, unopened.
    let b = backend(&config, "egress-shop-payments-api.payments.example-443");
    assert!(b.originate_tls.is_none());
    assert!(config.external_hosts.is_empty());

    let registry_only = format!(
        "{PAYMENTS}---\napiVersion: trellis.dev/v1alpha1\nkind: MeshConfig\nmetadata: {{name: default}}\nspec: {{egress: {{mode: registryOnly}}}}\n"
    );
    let config = compile_with_vips(&yaml(&registry_only), &explicit);
    assert!(listener(&config, "http-proxy").egress);
}
