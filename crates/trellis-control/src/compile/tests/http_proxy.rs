//! The HTTP proxy listener: the upstreams' routes, told apart by host.

use trellis_api::proto::v1::ListenerProtocol;

use super::outbound::{bookinfo, productpage, LISTENER};
use super::*;

const CANARY_AND_TCP: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-canary, namespace: bookinfo}
spec:
  parentRefs: [{kind: Service, name: ratings}]
  rules:
    - matches: [{headers: [{name: x-canary, value: "true"}]}]
      backendRefs: [{name: ratings-v2}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: postgres, namespace: bookinfo}
spec:
  selector: {app: postgres}
  ports: [{port: 5432, appProtocol: tcp}]
---
apiVersion: trellis.dev/v1alpha1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{port: 8080, appProtocol: grpc}]
"#;

fn with_http_proxy(mut proxy: Workload, port: u32, extra: &[(&str, &str, u32)]) -> Workload {
    proxy.http_proxy_port = port;
    proxy.upstreams.extend(
        extra
            .iter()
            .map(|(service, namespace, local_port)| Upstream {
                service: service.to_string(),
                namespace: namespace.to_string(),
                local_port: *local_port,
            }),
    );
    proxy
}

#[test]
fn http_upstreams_are_routed_by_their_host_names() {
    let proxy = with_http_proxy(
        productpage(),
        7150,
        &[("postgres", "", 9002), ("reviews", "shop", 0)],
    );
    let config = compile(&bookinfo(CANARY_AND_TCP), &proxy);
    let l = listener(&config, "http-proxy");
    assert_eq!(l.address, "127.0.0.1:7150");
    assert_eq!(l.protocol, ListenerProtocol::Auto as i32);
    // Ratings keeps its canary rule; the TCP upstream has no place in an HTTP proxy;
    // a Service in another namespace is known by its qualified names only.
    let ratings = "host:ratings,ratings.bookinfo,ratings.bookinfo.svc.trellis.local";
    let reviews = "host:reviews.shop,reviews.shop.svc.trellis.local";
    assert_eq!(
        routes(l),
        [
            format!(
                "bookinfo.ratings-canary.0 | h:x-canary=true {ratings} | ratings-v2.bookinfo=1"
            ),
            format!("default | {ratings} | ratings.bookinfo=1"),
            format!("default | {reviews} | reviews.shop=1"),
        ]
    );
    // The same routes still serve the local port; an upstream with local port 0 gets
    // none, and its backend speaks HTTP/2 for gRPC.
    assert_eq!(routes(listener(&config, LISTENER)).len(), 2);
    assert_eq!(
        names(&config).0,
        [
            "http-proxy",
            "inbound",
            "outbound-bookinfo-postgres",
            "outbound-bookinfo-ratings"
        ]
    );
    assert_eq!(backend(&config, "reviews.shop").protocol, http2());
}

#[test]
fn no_http_proxy_without_its_port_or_when_the_port_is_taken() {
    let config = compile(&bookinfo(""), &productpage());
    assert!(!names(&config).0.contains(&"http-proxy"));

    // 9001 is ratings' local port already.
    let taken = with_http_proxy(productpage(), 9001, &[]);
    let config = compile(&bookinfo(""), &taken);
    assert_eq!(names(&config).0, ["inbound", LISTENER]);
}

#[test]
fn upstream_reached_only_by_name_still_gets_its_backend() {
    let mut proxy = with_http_proxy(productpage(), 7150, &[]);
    proxy.upstreams[0].local_port = 0;
    let config = compile(&bookinfo(""), &proxy);
    assert_eq!(names(&config).0, ["http-proxy", "inbound"]);
    assert_eq!(
        endpoints(backend(&config, "ratings.bookinfo")),
        ["10.0.1.1:7143", "10.0.1.2:7143", "10.0.2.1:7200"]
    );
}
