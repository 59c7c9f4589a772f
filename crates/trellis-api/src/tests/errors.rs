use super::example;
use crate::parse_documents;

/// Breaks one example with a text replacement and returns the error it must produce.
fn break_example(name: &str, from: &str, to: &str) -> crate::ValidationError {
    let text = example(name);
    let broken = text.replacen(from, to, 1);
    assert_ne!(broken, text, "{name}: {from:?} is not in the example");
    parse_documents(&broken).expect_err(&format!("{name}: {to:?} was accepted"))
}

/// Each broken document, the exact path of the error, and a piece of its message.
#[test]
fn broken_documents_name_the_field() {
    const CANARY: &str = "httproute-canary.yaml";
    const FILTERS: &str = "httproute-filters.yaml";
    const GRPC: &str = "grpcroute.yaml";
    const TCP: &str = "tcproute.yaml";
    const TLS: &str = "tlsroute.yaml";
    const WORKLOAD: &str = "workload.yaml";
    const MESH: &str = "meshconfig.yaml";
    const POLICY: &str = "backendpolicy.yaml";
    const AUTHZ: &str = "authorizationpolicy.yaml";
    const FAULT: &str = "faultinjection.yaml";
    const LIMITS: &str = "ratelimitpolicy.yaml";
    const EXTERNAL: &str = "externalservice.yaml";
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // Envelope and metadata.
        (CANARY, "apiVersion: gateway.networking.k8s.io/v1\n", "apiVersion: trellis.dev/v1alpha1\n",
         "apiVersion", "HTTPRoute needs \"gateway.networking.k8s.io/v1\", got \"trellis.dev/v1alpha1\""),
        (CANARY, "apiVersion: gateway.networking.k8s.io/v1\n", "",
         "apiVersion", "missing field `apiVersion`"),
        (TCP, "v1alpha2", "v1beta1",
         "apiVersion", "\"gateway.networking.k8s.io/v1\" or \"gateway.networking.k8s.io/v1alpha2\""),
        (CANARY, "kind: HTTPRoute", "kind: HttpRoute", "kind", "unknown kind \"HttpRoute\""),
        (CANARY, "kind: HTTPRoute", "kind: [HTTPRoute]", "kind", "expected a kind name, got a list"),
        (CANARY, "name: ratings-canary", "name: Bad_Name", "metadata.name", "\"Bad_Name\" is not a valid name"),
        (CANARY, "namespace: bookinfo", "namespace: book.info", "metadata.namespace", "not a valid name"),
        (CANARY, "app: ratings", "app: \"rat ings\"", "metadata.labels.app", "not a valid label value"),
        (CANARY, "app: ratings", "\"-app\": ratings", "metadata.labels.-app", "not a valid key"),
        (CANARY, "app: ratings", "app: 1", "metadata.labels.app", "invalid type: integer `1`, expected a string"),
        (WORKLOAD, "resourceVersion: \"42\"", "resourceVersion: \"v42\"", "metadata.resourceVersion", "decimal"),
        (WORKLOAD, "creationTimestamp: \"2026-11-05T10:00:00Z\"", "creationTimestamp: yesterday",
         "metadata.creationTimestamp", "RFC 3339"),
        (WORKLOAD, "status: \"True\"", "status: \"Yes\"", "status.conditions[0].status", "unknown variant `Yes`"),
        // HTTPRoute.
        (CANARY, "weight: 90", "weight: \"90\"",
         "spec.rules[1].backendRefs[0].weight", "invalid type: \"90\", expected a weight between 0 and 1000000"),
        (CANARY, "weight: 10", "weight: 2000000",
         "spec.rules[1].backendRefs[1].weight", "must be between 0 and 1000000, got 2000000"),
        (CANARY, "weight: 10", "weight: -1",
         "spec.rules[1].backendRefs[1].weight", "must be between 0 and 1000000, got -1"),
        (CANARY, "type: PathPrefix", "type: Prefix",
         "spec.rules[1].matches[0].path.type", "unknown variant `Prefix`, expected one of `Exact`, `PathPrefix`, `RegularExpression`"),
        (CANARY, "value: /ratings", "value: ratings", "spec.rules[1].matches[0].path.value", "must start with '/'"),
        (CANARY, "value: /ratings", "value: /a//b", "spec.rules[1].matches[0].path.value", "must not contain '//'"),
        (CANARY, "name: x-canary", "name: \"x canary\"",
         "spec.rules[0].matches[0].headers[0].name", "not a valid header name"),
        (CANARY, "request: 10s", "request: 10 seconds", "spec.rules[1].timeouts.request", "invalid duration \"10 seconds\""),
        (CANARY, "backoff: 100ms", "backoff: 1.5s", "spec.rules[1].retry.backoff", "invalid duration"),
        (CANARY, "backendRequest: 2s", "backendRequest: 20s",
         "spec.rules[1].timeouts.backendRequest", "must be at most timeouts.request (10s), got 20s"),
        (CANARY, "codes: [502, 503, 504]", "codes: [502, 200]",
         "spec.rules[1].retry.codes[1]", "between 400 and 599, got 200"),
        (CANARY, "port: 9080\n  rules", "port: 0\n  rules", "spec.parentRefs[0].port", "must be between 1 and 65535, got 0"),
        (CANARY, "port: 9080\n  rules", "port: 65536\n  rules", "spec.parentRefs[0].port", "must be between 1 and 65535, got 65536"),
        (CANARY, "kind: Service", "kind: Gateway", "spec.parentRefs[0].kind", "must be Service, got \"Gateway\""),
        (CANARY, "group: \"\"", "group: apps", "spec.parentRefs[0].group", "must be \"\" (core) or \"trellis.dev\""),
        (CANARY, "- name: ratings-v2\n          port: 9080\n    - name: split", "- name: Ratings\n    - name: split",
         "spec.rules[0].backendRefs[0].name", "not a valid name"),
        (CANARY, "name: split", "name: canary-header", "spec.rules[1].name", "names an earlier rule"),
        (CANARY, "type: RequestHeaderModifier", "type: ResponseHeaderModifier",
         "spec.rules[1].filters[0]", "requestHeaderModifier is set but type is ResponseHeaderModifier"),
        (CANARY, "type: RequestHeaderModifier\n          requestHeaderModifier:\n            set:\n              - name: x-route\n                value: ratings-canary\n            remove: [x-debug]\n",
         "type: RequestHeaderModifier\n", "spec.rules[1].filters[0]", "type RequestHeaderModifier needs the requestHeaderModifier field"),
        (CANARY, "type: RequestHeaderModifier", "type: ExtensionRef", "spec.rules[1].filters[0].type", "unknown variant `ExtensionRef`"),
        (CANARY, "remove: [x-debug]", "remove: [x-debug, X-Debug]",
         "spec.rules[1].filters[0].requestHeaderModifier.remove[1]", "appears twice"),
        (CANARY, "value: ratings-canary", "value: \"a\\nb\"",
         "spec.rules[1].filters[0].requestHeaderModifier.set[0].value", "control characters"),
        (FILTERS, "method: GET", "method: FETCH", "spec.rules[0].matches[0].method", "unknown variant `FETCH`"),
        (FILTERS, "\"^/reviews/[0-9]+$\"", "\"^/reviews/[0-9+$\"",
         "spec.rules[2].matches[0].path.value", "is not a valid regular expression: unclosed character class"),
        (FILTERS, "    - reviews\n", "    - \"reviews:80\"\n", "spec.hostnames[0]", "not a valid hostname"),
        (FILTERS, "percent: 10", "percent: 150", "spec.rules[2].filters[0].requestMirror.percent", "between 0 and 100, got 150"),
        (FILTERS, "percent: 10", "percent: 10\n            fraction: {numerator: 1}",
         "spec.rules[2].filters[0].requestMirror.fraction", "not both"),
        (FILTERS, "name: reviews-v3", "name: reviews_v3",
         "spec.rules[2].filters[0].requestMirror.backendRef.name", "not a valid name"),
        (FILTERS, "type: PathPrefix\n            value: /v1/reviews", "type: Exact\n            value: /v1/reviews",
         "spec.rules[0].filters[0]", "ReplacePrefixMatch needs every match of the rule to be a PathPrefix"),
        (FILTERS, "replacePrefixMatch: /reviews", "replaceFullPath: /reviews",
         "spec.rules[0].filters[0].urlRewrite.path", "replaceFullPath is set but type is ReplacePrefixMatch"),
        (FILTERS, "statusCode: 301", "statusCode: 200", "spec.rules[1].filters[0].requestRedirect.statusCode", "301, 302"),
        (FILTERS, "name: format", "name: \"\"", "spec.rules[2].matches[0].queryParams[0].name", "1 to 256"),
        (FILTERS, "value: v2", "value: v2\n                  - name: X-Version\n                    value: v3",
         "spec.rules[2].backendRefs[0].filters[0].requestHeaderModifier.set[1].name", "appears twice"),
        (FILTERS, "type: ResponseHeaderModifier\n          responseHeaderModifier:\n            add:\n              - name: x-served-by\n                value: trellis\n",
         "type: RequestMirror\n          requestMirror:\n            backendRef: {name: reviews-v3}\n        - type: RequestRedirect\n          requestRedirect: {}\n        - type: URLRewrite\n          urlRewrite: {}\n",
         "spec.rules[2].filters[3].type", "URLRewrite cannot be combined with RequestRedirect"),
        (FILTERS, "value: v2\n", "value: v2\n            - type: RequestMirror\n              requestMirror: {backendRef: {name: reviews-v3}}\n",
         "spec.rules[2].backendRefs[0].filters[1].type", "RequestMirror is not supported on a backendRef"),
        // FaultInjection.
        (FAULT, "kind: HTTPRoute", "kind: Service", "spec.targetRef", "must name an HTTPRoute or GRPCRoute"),
        (FAULT, "fixed: 2s", "fixed: 0s", "spec.delay.fixed", "more than 0s and at most 1h"),
        (FAULT, "percent: 50", "percent: 150", "spec.delay.percent", "between 0 and 100, got 150"),
        (FAULT, "httpStatus: 503", "httpStatus: 200", "spec.abort.httpStatus", "between 400 and 599"),
        (FAULT, "httpStatus: 503", "grpcStatus: 0", "spec.abort.grpcStatus", "between 1 and 16"),
        (FAULT, "httpStatus: 503\n", "", "spec.abort", "set httpStatus or grpcStatus"),
        (FAULT, "namespaces: [shop]", "namespaces: [Shop]", "spec.match.from.namespaces[0]", "not a valid name"),
        (FAULT, "[\"spiffe://trellis.local/ns/bookinfo/sa/productpage\"]", "[productpage]",
         "spec.match.from.identities[0]", "not a SPIFFE ID"),
        (FAULT, "name: x-chaos", "name: \"x chaos\"", "spec.match.headers[0].name", "not a valid header name"),
        (FAULT, "  abort:", "  chaos: true\n  abort:", "spec.chaos", "unknown field"),
        // GRPCRoute.
        (GRPC, "method: SayHello", "method: Say.Hello", "spec.rules[0].matches[0].method.method", "not a method name"),
        (GRPC, "service: helloworld.Greeter\n      filters", "type: Exact\n      filters",
         "spec.rules[1].matches[0].method", "set service, method or both"),
        (GRPC, "value: \"^(acme|globex)$\"", "value: \"^(acme\"",
         "spec.rules[0].matches[0].headers[0].value", "not a valid regular expression"),
        (GRPC, "type: RequestHeaderModifier", "type: URLRewrite", "spec.rules[1].filters[0].type", "unknown variant `URLRewrite`"),
        (GRPC, "codes: [unavailable]", "codes: [UNAVAILABLE]", "spec.rules[1].retry.codes[0]", "unknown variant `UNAVAILABLE`"),
        // TCPRoute.
        (TCP, "  parentRefs:\n    - name: postgres\n      port: 5432\n", "  parentRefs: []\n",
         "spec.parentRefs", "at least one parentRef is required"),
        (TCP, "  rules:\n    - backendRefs:\n        - name: postgres-primary\n          port: 5432\n          weight: 1\n",
         "  rules:\n    - backendRefs: []\n", "spec.rules[0].backendRefs", "at least one backendRef"),
        (TCP, "weight: 1", "weight: 1\n          filters: []", "spec.rules[0].backendRefs[0].filters", "unknown field `filters`"),
        // TLSRoute.
        (TLS, "- payments.shop.example", "- Payments.shop.example", "spec.hostnames[0]", "not a valid hostname"),
        (TLS, "- payments.shop.example", "- 10.0.0.1", "spec.hostnames[0]", "IP addresses are not allowed"),
        (TLS, "  rules:\n    - backendRefs:\n", "  rules:\n    - backendRefs: []\n  x:\n    - backendRefs:\n", "spec.x", "unknown field `x`"),
        (TLS, "  parentRefs:\n    - name: payments\n      port: 443\n", "  parentRefs: []\n", "spec.parentRefs", "at least one parentRef"),
        (TLS, "weight: 10", "weight: 10\n          filters: []", "spec.rules[0].backendRefs[1].filters", "unknown field `filters`"),
        // Service and Workload.
        ("service.yaml", "- name: metrics\n      port: 9090", "- port: 9090", "spec.ports[1].name", "is required when a Service has more than one port"),
        ("service.yaml", "port: 9090", "port: 70000", "spec.ports[1].port", "must be between 1 and 65535, got 70000"),
        ("service.yaml", "port: 9090", "port: http", "spec.ports[1].port", "invalid type: \"http\", expected a port number"),
        ("service.yaml", "port: 9090", "port: 9080", "spec.ports[1].port", "port 9080 is declared twice"),
        ("service.yaml", "appProtocol: http\n    - name: metrics", "appProtocol: https\n    - name: metrics",
         "spec.ports[0].appProtocol", "unknown variant `https`, expected one of `http`, `http2`, `grpc`, `tcp`, `tls`"),
        (WORKLOAD, "address: 10.0.3.17", "address: 10.0.3", "spec.address", "\"10.0.3\" is not an IP address"),
        (WORKLOAD, "address: 10.0.3.17", "address: 0.0.0.0", "spec.address", "not an address a workload can be reached at"),
        (WORKLOAD, "  address: 10.0.3.17\n", "", "spec", "missing field `address`"),
        (WORKLOAD, "serviceAccount: ratings", "serviceAccount: Ratings", "spec.serviceAccount", "not a valid name"),
        (WORKLOAD, "inboundPort: 7143", "inboundPort: 0", "spec.inboundPort", "between 1 and 65535"),
        // MeshConfig and BackendPolicy.
        (MESH, "mode: strict", "mode: STRICT", "spec.mtls.mode", "unknown variant `STRICT`, expected `permissive` or `strict`"),
        (MESH, "trustDomain: example.org", "trustDomain: Example.org", "spec.trustDomain", "not a valid trust domain"),
        (MESH, "defaultAuthorization: deny", "defaultAuthorization: maybe", "spec.defaultAuthorization", "expected `allow` or `deny`"),
        (MESH, "format: json", "format: xml", "spec.accessLog.format", "expected `json` or `text`"),
        (MESH, "output: stdout", "output: access.log", "spec.accessLog.output", "expected \"stdout\" or an absolute file path"),
        (MESH, "output: /var/log/trellis/books-access.log", "output: logs/", "spec.accessLog.services[1].output", "an absolute file path"),
        (MESH, "- name: web", "- name: \"\"", "spec.accessLog.services[0].name", "must not be empty"),
        (MESH, "maxRequestSeries: 5000", "maxRequestSeries: 0", "spec.metrics.maxRequestSeries", "must be at least 1"),
        (MESH, "maxRequestSeries: 5000", "maxRequestSeries: -1", "spec.metrics.maxRequestSeries", "invalid value"),
        (MESH, "mode: registryOnly", "mode: registry-only", "spec.egress.mode", "expected `allowAny` or `registryOnly`"),
        (MESH, "sampling: 0.01", "sampling: 2", "spec.tracing.sampling", "must be between 0 and 1, got 2"),
        (MESH, "endpoint: http://otel-collector:4317", "endpoint: otel-collector", "spec.tracing.otlp.endpoint", "expected http://HOST:PORT"),
        (POLICY, "type: least-request", "type: random", "spec.loadBalancer.type",
         "expected one of `ewma`, `round-robin`, `least-request`"),
        (POLICY, "connectTimeout: 500ms", "connectTimeout: 0s", "spec.connectTimeout", "must be greater than 0s"),
        (POLICY, "protocol: http2", "protocol: http2\n  locality: nearest", "spec.locality", "unknown variant `nearest`, expected `any` or `prefer-zone`"),
        (POLICY, "type: least-request", "type: consistent-hash", "spec.loadBalancer.hashOn", "consistent-hash needs hashOn"),
        (POLICY, "type: least-request", "type: least-request\n    hashOn: {header: x-user}", "spec.loadBalancer.hashOn", "only to type consistent-hash"),
        (POLICY, "type: least-request", "type: consistent-hash\n    hashOn: {header: x-user, cookie: s}", "spec.loadBalancer.hashOn", "exactly one of header, cookie or sourceIdentity"),
        (POLICY, "type: least-request", "type: consistent-hash\n    hashOn: {cookie: s, sourceIdentity: true}", "spec.loadBalancer.hashOn", "exactly one of header, cookie or sourceIdentity"),
        (POLICY, "type: least-request", "type: consistent-hash\n    hashOn: {sourceIdentity: false}", "spec.loadBalancer.hashOn.sourceIdentity", "only `true`"),
        (POLICY, "protocol: http2", "protocol: http2\n  zoneFailover: {minHealthyPercent: 50}", "spec.zoneFailover", "only with locality: prefer-zone"),
        (POLICY, "protocol: http2", "protocol: http2\n  locality: prefer-zone\n  zoneFailover: {minHealthyPercent: 0}", "spec.zoneFailover.minHealthyPercent", "between 1 and 100, got 0"),
        (POLICY, "type: least-request", "type: consistent-hash\n    hashOn: {header: \"x user\"}", "spec.loadBalancer.hashOn.header", "not a valid header name"),
        (POLICY, "type: least-request", "type: consistent-hash\n    hashOn: {cookie: \"a=b\"}", "spec.loadBalancer.hashOn.cookie", "not a cookie name"),
        (POLICY, "kind: Service", "kind: Pod", "spec.targetRef.kind", "must be Service, got \"Pod\""),
        (POLICY, "    kind: Service\n", "", "spec.targetRef", "missing field `kind`"),
        (POLICY, "protocol: http2", "protocol: h2", "spec.protocol", "expected `http1` or `http2`"),
        (POLICY, "ratio: 0.1", "ratio: 1.5", "spec.retryBudget.ratio", "must be between 0 and 1, got 1.5"),
        (POLICY, "maxRequests: 500", "maxRequests: 0", "spec.circuitBreaker.maxRequests", "must be at least 1"),
        (POLICY, "maxRequests: 500", "maxRequest: 5", "spec.circuitBreaker.maxRequest", "unknown field"),
        (POLICY, "maxEjectionPercent: 30", "maxEjectionPercent: 130", "spec.outlierDetection.maxEjectionPercent", "between 0 and 100, got 130"),
        (POLICY, "baseEjectionTime: 10s", "baseEjectionTime: 10s\n    maxEjectionTime: 5s", "spec.outlierDetection.maxEjectionTime", "at least baseEjectionTime"),
        (POLICY, "tolerance: 1.5", "tolerance: 0.5", "spec.adaptiveConcurrency.tolerance", "must be at least 1, got 0.5"),
        (POLICY, "minLimit: 20", "minLimit: 20\n    maxLimit: 10", "spec.adaptiveConcurrency.minLimit", "at most maxLimit (10)"),
        (POLICY, "type: grpc", "type: udp", "spec.healthCheck.type", "unknown variant `udp`"),
        (POLICY, "interval: 5s", "path: health", "spec.healthCheck.path", "must start with '/'"),
        // RateLimitPolicy.
        (LIMITS, "- requestsPerSecond: 100", "- requestsPerSecond: 0", "spec.local[0].requestsPerSecond", "must be at least 1"),
        (LIMITS, "burst: 40", "burst: 0", "spec.local[1].burst", "must be at least 1"),
        (LIMITS, "per: source", "per: caller", "spec.local[1].per", "unknown variant `caller`"),
        (LIMITS, "kind: Service", "kind: HTTPRoute", "spec.targetRef.kind", "must be Service"),
        (LIMITS, "- requestsPerSecond: 250", "- requestsPerSecond: 0", "spec.global[0].requestsPerSecond", "must be at least 1"),
        (LIMITS, "  local:\n    - requestsPerSecond: 100\n    - requestsPerSecond: 20\n      burst: 40\n      per: source\n  global:\n    - requestsPerSecond: 250\n", "",
         "spec.local", "at least one limit is required in local or global"),
        // ExternalService.
        (EXTERNAL, "hosts: [api.payments.example]", "hosts: []", "spec.hosts", "at least one host is required"),
        (EXTERNAL, "hosts: [api.payments.example]", "hosts: [api.payments.example, API.example]", "spec.hosts[1]", "not a valid hostname"),
        (EXTERNAL, "hosts: [api.payments.example]", "hosts: [\"*.payments.example\"]", "spec.hosts[0]", "wildcard hosts are not supported"),
        (EXTERNAL, "hosts: [api.payments.example]", "hosts: [api.payments.example, api.payments.example]", "spec.hosts[1]", "is listed twice"),
        (EXTERNAL, "hosts: [api.payments.example]", "hosts: [10.0.0.1]", "spec.hosts[0]", "IP addresses are not allowed"),
        (EXTERNAL, "    - port: 80\n", "    - port: 443\n", "spec.ports[1].port", "port 443 is listed twice"),
        (EXTERNAL, "protocol: https", "protocol: ftp", "spec.ports[1].protocol", "unknown variant `ftp`"),
        (EXTERNAL, "targetPort: 443", "targetPort: 70000", "spec.ports[1].targetPort", "between 1 and 65535"),
        (EXTERNAL, "      protocol: tls", "      proto: tls", "spec.ports[0].proto", "unknown field `proto`"),
        (EXTERNAL, "resolution: dns", "resolution: static", "spec.addresses", "needs at least one address"),
        (EXTERNAL, "resolution: dns", "resolution: dns\n  addresses: [192.0.2.1]", "spec.addresses", "only with resolution: static"),
        (EXTERNAL, "resolution: dns", "resolution: static\n  addresses: [nowhere]", "spec.addresses[0]", "\"nowhere\" is not an IP address"),
        (EXTERNAL, "protocol: https", "protocol: http", "spec.tls", "no port has protocol: https"),
        (EXTERNAL, "caFile: /etc/trellis/payments-ca.pem", "caFile: payments-ca.pem", "spec.tls.caFile", "must be an absolute path"),
        (EXTERNAL, "caFile: /etc/trellis/payments-ca.pem", "caFile: /a.pem\n    caCertificates: x", "spec.tls.caFile", "not both"),
        (EXTERNAL, "caFile: /etc/trellis/payments-ca.pem", "caCertificates: x", "spec.tls.caCertificates", "expected PEM certificates"),
        (EXTERNAL, "caFile: /etc/trellis/payments-ca.pem", "serverName: \"*.payments.example\"", "spec.tls.serverName", "one exact DNS name"),
        // AuthorizationPolicy.
        (AUTHZ, "action: Allow", "action: allow", "spec.action", "unknown variant `allow`, expected `Allow` or `Deny`"),
        (AUTHZ, "kind: Service", "kind: Workload", "spec.targetRef.kind", "must be Service, got \"Workload\""),
        (AUTHZ, "  action: Deny\n  rules:\n    - from: [{identities: [\"spiffe://trellis.local/ns/ops/*\"]}]\n      to: [{methods: [DELETE]}]\n",
         "  action: Deny\n", "spec.rules", "a Deny policy needs at least one rule"),
        (AUTHZ, "- identities: [\"spiffe://trellis.local/ns/shop/sa/web\"]", "- identities: []",
         "spec.rules[0].from[0]", "name identities, namespaces or both"),
        (AUTHZ, "\"spiffe://trellis.local/ns/shop/sa/web\"", "\"spiffe://trellis.local/ns/*/sa/web\"",
         "spec.rules[0].from[0].identities[0]", "has a '*' before its end"),
        (AUTHZ, "\"spiffe://trellis.local/ns/shop/sa/web\"", "web",
         "spec.rules[0].from[0].identities[0]", "is not an identity pattern"),
        (AUTHZ, "namespaces: [ops]", "namespaces: [Ops]", "spec.rules[0].from[1].namespaces[0]", "not a valid name"),
        (AUTHZ, "ports: [8080]", "ports: [8080, 70000]", "spec.rules[0].to[0].ports[1]", "must be between 1 and 65535, got 70000"),
        (AUTHZ, "methods: [GET, POST]", "methods: [GET, post]", "spec.rules[0].to[0].methods[1]", "\"post\" is not an HTTP method"),
        (AUTHZ, "{exact: /cart}", "{exact: cart}", "spec.rules[0].to[0].paths[0].exact", "must start with '/'"),
        (AUTHZ, "{prefix: /api}", "{regex: /api}", "spec.rules[0].to[0].paths[1]", "unknown variant `regex`, expected `exact` or `prefix`"),
        (AUTHZ, "name: x-tenant", "name: \"x tenant\"", "spec.rules[0].to[0].headers[0].name", "not a valid header name"),
    ];
    for (name, from, to, path, message) in cases {
        let err = break_example(name, from, to);
        assert_eq!(err.path, *path, "{name}: {to:?}: {err}");
        assert!(err.message.contains(message), "{name}: {to:?}: {err}");
        assert!(
            !err.to_string().contains('\n'),
            "{name}: {to:?}: error spans lines: {err}"
        );
        // Multi-document examples: the Deny policy is the second AuthorizationPolicy.
        let want_document = match *name {
            "service.yaml" => Some(1),
            AUTHZ if from.contains("action: Deny") => Some(2),
            AUTHZ => Some(1),
            _ => None,
        };
        assert_eq!(err.document, want_document, "{name}: {to:?}: {err}");
    }
}

#[test]
fn messages_read_as_documented() {
    let cases = [
        (
            "httproute-canary.yaml",
            "weight: 10",
            "weight: 2000000",
            "spec.rules[1].backendRefs[1].weight: must be between 0 and 1000000, got 2000000",
        ),
        (
            "httproute-canary.yaml",
            "name: ratings-canary",
            "name: Bad_Name",
            "metadata.name: \"Bad_Name\" is not a valid name: lowercase letters, digits and \
             '-', at most 63 characters, starting and ending with a letter or digit",
        ),
        (
            "service.yaml",
            "selector:\n    app: ratings\n  ports",
            "selector: {}\n  ports",
            "document 1: spec.selector: must select workloads by at least one label, e.g. \
             {app: ratings}",
        ),
    ];
    for (name, from, to, want) in cases {
        assert_eq!(break_example(name, from, to).to_string(), want);
    }
}

/// An unknown field anywhere is refused, and the error names it.
#[test]
fn unknown_fields_are_rejected_by_name() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str)] = &[
        ("httproute-canary.yaml", "kind: HTTPRoute\n", "kind: HTTPRoute\nextra: 1\n", "extra"),
        ("httproute-canary.yaml", "namespace: bookinfo\n", "namespace: bookinfo\n  uid: abc\n", "uid"),
        ("httproute-canary.yaml", "  rules:\n", "  colour: red\n  rules:\n", "colour"),
        ("httproute-canary.yaml", "name: split\n", "name: split\n      priority: 1\n", "priority"),
        ("httproute-canary.yaml", "type: PathPrefix\n", "type: PathPrefix\n            caseSensitive: false\n", "caseSensitive"),
        ("httproute-canary.yaml", "remove: [x-debug]", "remove: [x-debug]\n            append: []", "append"),
        ("httproute-canary.yaml", "weight: 90\n", "weight: 90\n          wieght: 10\n", "wieght"),
        ("httproute-canary.yaml", "attempts: 2", "attempts: 2\n        budget: 20", "budget"),
        ("grpcroute.yaml", "method: SayHello", "method: SayHello\n            path: /x", "path"),
        ("service.yaml", "targetPort: 9091", "targetPort: 9091\n      protocol: TCP", "protocol"),
        ("workload.yaml", "zone: zone-a", "zone: zone-a\n  region: eu", "region"),
        ("workload.yaml", "observedGeneration: 1", "observedGeneration: 1\n      severity: high", "severity"),
        ("meshconfig.yaml", "mode: strict", "mode: strict\n    ciphers: []", "ciphers"),
        ("backendpolicy.yaml", "name: ratings\n  loadBalancer", "name: ratings\n    namespace: x\n  loadBalancer", "namespace"),
        ("authorizationpolicy.yaml", "  action: Allow\n", "  action: Allow\n  selector: {}\n", "selector"),
        ("authorizationpolicy.yaml", "- namespaces: [ops]", "- namespaces: [ops]\n          principals: []", "principals"),
        ("authorizationpolicy.yaml", "methods: [GET, POST]", "methods: [GET, POST]\n          notPaths: []", "notPaths"),
        ("authorizationpolicy.yaml", "{name: x-tenant, value: acme}", "{name: x-tenant, value: acme, prefix: a}", "prefix"),
    ];
    for (name, from, to, field) in cases {
        let err = break_example(name, from, to);
        let text = err.to_string();
        assert!(
            text.contains(&format!("unknown field `{field}`")),
            "{name}: {text}"
        );
    }
}

#[test]
fn lists_are_bounded() {
    let rules = |rules: usize, matches: usize| {
        let one_match = "        - path: {value: /a}\n".repeat(matches);
        let rule = format!("    - matches:\n{one_match}      backendRefs: [{{name: web}}]\n");
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\n\
             spec:\n  parentRefs: [{{name: web}}]\n  rules:\n{}",
            rule.repeat(rules)
        )
    };
    assert!(parse_documents(&rules(16, 8)).is_ok());
    let err = parse_documents(&rules(17, 1)).expect_err("17 rules");
    assert_eq!(
        err.to_string(),
        "spec.rules: at most 16 rules are allowed, got 17"
    );
    let err = parse_documents(&rules(2, 9)).expect_err("9 matches");
    assert_eq!(
        err.to_string(),
        "spec.rules[0].matches: at most 8 entries are allowed, got 9"
    );
}

#[test]
fn deserializing_directly_keeps_the_path_in_the_message() {
    let text = example("httproute-canary.yaml").replacen("type: PathPrefix", "type: Prefix", 1);
    let err = serde_saphyr::from_str::<crate::Resource>(&text).expect_err("bad type");
    assert!(
        err.to_string()
            .contains("spec.rules[1].matches[0].path.type: unknown variant `Prefix`"),
        "{err}"
    );
}
