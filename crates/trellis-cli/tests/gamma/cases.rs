//! The cases of the Gateway API's mesh conformance suite (v1.6.3,
//! `conformance/tests/mesh/`), each with the manifest it applies and the requests and
//! answers its test expects, written as Trellis's own table. A redirect's `Location`
//! is checked too, where the suite's mesh client only checks the status.

use super::case::{get, get_pod, grpc, Case, Location, Profile, Request, Weights, CONSUMER, MESH};

use Profile::{MeshGrpc, MeshHttp};

fn to(path: &'static str) -> Location {
    Location {
        path: Some(path),
        ..Location::default()
    }
}

fn to_host(host: &'static str) -> Location {
    Location {
        host: Some(host),
        ..Location::default()
    }
}

/// `GET echo/path`, redirected with `status` to `location`.
fn redirected(path: &'static str, status: u16, location: Location) -> Request {
    get("echo", path).redirect(status, location)
}

pub fn all() -> Vec<Case> {
    vec![
        Case::new("MeshBasic", MeshHttp, None).requests([get("echo", "/")]),
        Case::new(
            "MeshHTTPRouteSimpleSameNamespace",
            MeshHttp,
            Some("httproute-simple-same-namespace.yaml"),
        )
        .requests([get("echo", "/").backend("echo-v1")]),
        Case::new("MeshTrafficSplit", MeshHttp, Some("mesh-split.yaml")).requests([
            get("echo", "/v1").backend("echo-v1"),
            get("echo", "/v2").backend("echo-v2"),
        ]),
        Case::new(
            "MeshHTTPRouteMatching",
            MeshHttp,
            Some("httproute-matching.yaml"),
        )
        .requests([
            get("echo", "/").backend("echo-v1"),
            get("echo", "/example").backend("echo-v1"),
            get("echo", "/").header("Version", "one").backend("echo-v1"),
            get("echo", "/v2").backend("echo-v2"),
            get("echo", "/v2/example").backend("echo-v2"),
            get("echo", "/").header("Version", "two").backend("echo-v2"),
            get("echo", "/v2/").backend("echo-v2"),
            get("echo", "/v2example").backend("echo-v1"),
            get("echo", "/foo/v2/example").backend("echo-v1"),
        ]),
        Case::new(
            "MeshHTTPRouteQueryParamMatching",
            MeshHttp,
            Some("httproute-query-param-matching.yaml"),
        )
        .requests([
            get("echo", "/?animal=whale").backend("echo-v1"),
            get("echo", "/?animal=dolphin").backend("echo-v2"),
            get("echo", "/?animal=whale&otherparam=irrelevant").backend("echo-v1"),
            get("echo", "/?animal=dolphin&color=yellow").backend("echo-v2"),
            get("echo", "/?color=blue").status(404),
            get("echo", "/?animal=dog").status(404),
            get("echo", "/?animal=whaledolphin").status(404),
            get("echo", "/").status(404),
            get("echo", "/path1?animal=whale").backend("echo-v1"),
            get("echo", "/?animal=whale")
                .header("version", "one")
                .backend("echo-v2"),
            get("echo", "/path3?animal=shark").backend("echo-v1"),
            get("echo", "/path4?animal=kraken")
                .header("version", "three")
                .backend("echo-v1"),
            get("echo", "/?animal=shark").status(404),
            get("echo", "/path4?animal=kraken").status(404),
            get("echo", "/path5?animal=hydra").backend("echo-v1"),
        ]),
        Case::new(
            "MeshHTTPRouteNamedRule",
            MeshHttp,
            Some("httproute-named-rule.yaml"),
        )
        .requests([
            get("echo", "/named")
                .received_path("/named")
                .backend("echo-v1"),
            get("echo", "/unnamed").backend("echo-v2"),
        ]),
        header_modifier(
            "MeshHTTPRouteRequestHeaderModifier",
            "httproute-request-header-modifier.yaml",
        ),
        header_modifier(
            "MeshHTTPRouteBackendRequestHeaderModifier",
            "httproute-request-header-modifier-backend.yaml",
        ),
        Case::new(
            "MeshHTTPRouteRewritePath",
            MeshHttp,
            Some("httproute-rewrite-path.yaml"),
        )
        .requests(
            [
                get("echo", "/prefix/one/two").received_path("/one/two"),
                get("echo", "/strip-prefix/three").received_path("/three"),
                get("echo", "/strip-prefix").received_path("/"),
                get("echo", "/full/one/two").received_path("/one"),
                rewritten_with_headers("/full/rewrite-path-and-modify-headers/test", "/test"),
                rewritten_with_headers(
                    "/prefix/rewrite-path-and-modify-headers/one",
                    "/prefix/one",
                ),
            ]
            .map(|r| r.backend("echo-v1")),
        ),
        Case::new(
            "MeshHTTPRoute303Redirect",
            MeshHttp,
            Some("httproute-303-redirect.yaml"),
        )
        .requests([redirected("/redirect", 303, to("/redirect"))]),
        Case::new(
            "MeshHTTPRoute307Redirect",
            MeshHttp,
            Some("httproute-307-redirect.yaml"),
        )
        .requests([redirected("/temporary", 307, to("/temporary"))]),
        Case::new(
            "MeshHTTPRoute308Redirect",
            MeshHttp,
            Some("httproute-308-redirect.yaml"),
        )
        .requests([redirected("/permanent", 308, to("/permanent"))]),
        Case::new(
            "MeshHTTPRouteRedirectHostAndStatus",
            MeshHttp,
            Some("httproute-redirect-host-and-status.yaml"),
        )
        .requests([
            redirected("/hostname-redirect", 302, to_host("example.org")),
            redirected("/host-and-status", 301, to_host("example.org")),
        ]),
        Case::new(
            "MeshHTTPRouteRedirectPath",
            MeshHttp,
            Some("httproute-redirect-path.yaml"),
        )
        .requests([
            redirected(
                "/original-prefix/lemon",
                302,
                to("/replacement-prefix/lemon"),
            ),
            redirected("/full/path/original", 302, to("/full-path-replacement")),
            redirected(
                "/path-and-host",
                302,
                Location {
                    host: Some("example.org"),
                    ..to("/replacement-prefix")
                },
            ),
            redirected("/path-and-status", 301, to("/replacement-prefix")),
            redirected(
                "/full-path-and-host",
                302,
                Location {
                    host: Some("example.org"),
                    ..to("/replacement-full")
                },
            ),
            redirected("/full-path-and-status", 301, to("/replacement-full")),
        ]),
        Case::new(
            "MeshHTTPRouteRedirectPort",
            MeshHttp,
            Some("httproute-redirect-port.yaml"),
        )
        .requests({
            let port = Location {
                port: Some(8083),
                ..Location::default()
            };
            let port_and_host = Location {
                host: Some("example.org"),
                ..port.clone()
            };
            [
                redirected("/port", 302, port.clone()),
                redirected("/port-and-host", 302, port_and_host.clone()),
                redirected("/port-and-status", 301, port),
                redirected("/port-and-host-and-status", 302, port_and_host),
            ]
        }),
        Case::new(
            "MeshHTTPRouteSchemeRedirect",
            MeshHttp,
            Some("httproute-redirect-scheme.yaml"),
        )
        .requests({
            let https = Location {
                scheme: Some("https"),
                ..Location::default()
            };
            let https_and_host = Location {
                host: Some("example.org"),
                ..https.clone()
            };
            [
                redirected("/scheme", 302, https.clone()),
                redirected("/scheme-and-host", 302, https_and_host.clone()),
                redirected("/scheme-and-status", 301, https),
                redirected("/scheme-and-host-and-status", 302, https_and_host),
            ]
        }),
        Case::new(
            "MeshHTTPRouteWeight",
            MeshHttp,
            Some("httproute-weight.yaml"),
        )
        .weights(Weights {
            request: get("echo", "/"),
            shares: vec![("echo-v1", 0.7), ("echo-v2", 0.3)],
            requests: 500,
            tolerance: 0.05,
        }),
        Case::new("MeshFrontend", MeshHttp, Some("mesh-frontend.yaml")).requests([
            get("echo-v2", "/")
                .response_header("X-Header-Set", "set")
                .backend("echo-v2"),
            get_pod("v2", 8080)
                .no_response_header("X-Header-Set")
                .backend("echo-v2"),
        ]),
        Case::new("MeshFrontendHostname", MeshHttp, Some("mesh-frontend.yaml")).requests([
            get("echo-v2", "/")
                .header("Host", "echo-v1")
                .response_header("X-Header-Set", "set")
                .backend("echo-v2"),
            get("echo-v1", "/")
                .header("Host", "echo-v2")
                .no_response_header("X-Header-Set")
                .backend("echo-v1"),
        ]),
        Case::new("MeshPorts", MeshHttp, Some("mesh-ports.yaml")).requests([
            get("echo-v1", "/")
                .response_header("X-Header-Set", "v1")
                .backend("echo-v1"),
            get("echo-v1:8080", "/")
                .no_response_header("X-Header-Set")
                .backend("echo-v1"),
            get("echo-v2", "/")
                .response_header("X-Header-Set", "v2")
                .backend("echo-v2"),
            get("echo-v2:8080", "/")
                .response_header("X-Header-Set", "v2")
                .backend("echo-v2"),
        ]),
        Case::new(
            "MeshConsumerRoute",
            MeshHttp,
            Some("mesh-consumer-route.yaml"),
        )
        .requests_from(
            CONSUMER,
            [get("echo-v1.gateway-conformance-mesh", "/")
                .response_header("X-Header-Set", "set")
                .backend("echo-v1")],
        )
        .requests_from(
            MESH,
            [get("echo-v1.gateway-conformance-mesh", "/")
                .no_response_header("X-Header-Set")
                .backend("echo-v1")],
        ),
        Case::new(
            "MeshGRPCRouteWeight",
            MeshGrpc,
            Some("grpcroute-weight.yaml"),
        )
        .weights(Weights {
            request: grpc("echo:7070"),
            shares: vec![("echo-v1", 0.7), ("echo-v2", 0.3)],
            requests: 500,
            tolerance: 0.05,
        })
        .known_gap(
            "a sidecar forwards every inbound call to one application port (the Pod's \
             first): gRPC sent to the Service's port 7070 reaches the echo's HTTP port 8080",
            "invalid compression flag",
        ),
    ]
}

/// The request header modifier cases, the same whether the filter is on the rule or
/// on its backend.
fn header_modifier(name: &'static str, manifest: &'static str) -> Case {
    Case::new(name, MeshHttp, Some(manifest)).requests(
        [
            get("echo", "/set")
                .header("Some-Other-Header", "val")
                .received("Some-Other-Header", "val")
                .received("X-Header-Set", "set-overwrites-values"),
            get("echo", "/set")
                .header("Some-Other-Header", "val")
                .header("X-Header-Set", "some-other-value")
                .received("Some-Other-Header", "val")
                .received("X-Header-Set", "set-overwrites-values"),
            get("echo", "/add")
                .header("Some-Other-Header", "val")
                .received("Some-Other-Header", "val")
                .received("X-Header-Add", "add-appends-values"),
            get("echo", "/add")
                .header("Some-Other-Header", "val")
                .header("X-Header-Add", "some-other-value")
                .received("Some-Other-Header", "val")
                .received("X-Header-Add", "some-other-value,add-appends-values"),
            get("echo", "/remove")
                .header("X-Header-Remove", "val")
                .not_received("X-Header-Remove"),
            get("echo", "/multiple")
                .header("X-Header-Set-2", "set-val-2")
                .header("X-Header-Add-2", "add-val-2")
                .header("X-Header-Remove-2", "remove-val-2")
                .header("Another-Header", "another-header-val")
                .received("X-Header-Set-1", "header-set-1")
                .received("X-Header-Set-2", "header-set-2")
                .received("X-Header-Add-1", "header-add-1")
                .received("X-Header-Add-2", "add-val-2,header-add-2")
                .received("X-Header-Add-3", "header-add-3")
                .received("Another-Header", "another-header-val")
                .not_received("X-Header-Remove-1")
                .not_received("X-Header-Remove-2"),
            get("echo", "/case-insensitivity")
                .header("x-header-set", "original-val-set")
                .header("x-header-add", "original-val-add")
                .header("x-header-remove", "original-val-remove")
                .header("Another-Header", "another-header-val")
                .received("X-Header-Set", "header-set")
                .received("X-Header-Add", "original-val-add,header-add")
                .received("Another-Header", "another-header-val")
                .not_received("X-Header-Remove"),
        ]
        .map(|r| r.backend("echo-v1")),
    )
}

/// A rewritten path whose rule also modifies request headers.
fn rewritten_with_headers(path: &'static str, received: &'static str) -> Request {
    get("echo", path)
        .header("X-Header-Remove", "remove-val")
        .header("X-Header-Add-Append", "append-val-1")
        .header("X-Header-Set", "set-val")
        .received_path(received)
        .received("X-Header-Add", "header-val-1")
        .received("X-Header-Add-Append", "append-val-1,header-val-2")
        .received("X-Header-Set", "set-overwrites-values")
        .not_received("X-Header-Remove")
}
