//! The kinds of resource Trellis knows, their API groups and versions, and the names
//! the command line accepts for them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// API version of the Gateway API kinds (`HTTPRoute`, `GRPCRoute`; `TCPRoute` and
/// `TLSRoute` too).
pub const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
/// API version under which the Gateway API publishes `TCPRoute` and `TLSRoute`.
pub const GATEWAY_V1ALPHA2: &str = "gateway.networking.k8s.io/v1alpha2";
/// API version of Trellis's own kinds.
pub const TRELLIS_V1ALPHA1: &str = "trellis.dev/v1alpha1";
/// API group of Trellis's own kinds.
pub const TRELLIS_GROUP: &str = "trellis.dev";

/// A kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Gateway API HTTP routing attached to a Service (GAMMA).
    HTTPRoute,
    /// Gateway API gRPC routing attached to a Service.
    GRPCRoute,
    /// Gateway API opaque TCP routing attached to a Service.
    TCPRoute,
    /// Gateway API TLS passthrough routing by server name, attached to a Service.
    TLSRoute,
    /// A set of workloads chosen by label, with its ports.
    Service,
    /// One registered instance of an application.
    Workload,
    /// Mesh-wide settings; cluster-wide, usually named `default`.
    MeshConfig,
    /// Load balancing and timeouts for traffic to a Service.
    BackendPolicy,
    /// Who may call a Service, and how.
    AuthorizationPolicy,
    /// Delays and aborts injected into a route's requests.
    FaultInjection,
    /// Request rates a Service accepts.
    RateLimitPolicy,
    /// A host outside the mesh that applications may call (egress).
    ExternalService,
}

impl Kind {
    /// Every kind, in the order `trellis get` lists them.
    pub const ALL: [Kind; 12] = [
        Kind::Service,
        Kind::Workload,
        Kind::HTTPRoute,
        Kind::GRPCRoute,
        Kind::TCPRoute,
        Kind::TLSRoute,
        Kind::BackendPolicy,
        Kind::AuthorizationPolicy,
        Kind::FaultInjection,
        Kind::RateLimitPolicy,
        Kind::ExternalService,
        Kind::MeshConfig,
    ];

    /// The kind's name as written in `kind:` (`HTTPRoute`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::TCPRoute => "TCPRoute",
            Kind::TLSRoute => "TLSRoute",
            Kind::Service => "Service",
            Kind::Workload => "Workload",
            Kind::MeshConfig => "MeshConfig",
            Kind::BackendPolicy => "BackendPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::FaultInjection => "FaultInjection",
            Kind::RateLimitPolicy => "RateLimitPolicy",
            Kind::ExternalService => "ExternalService",
        }
    }

    /// Lowercase plural, as in Kubernetes resource paths (`httproutes`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::HTTPRoute => "httproutes",
            Kind::GRPCRoute => "grpcroutes",
            Kind::TCPRoute => "tcproutes",
            Kind::TLSRoute => "tlsroutes",
            Kind::Service => "services",
            Kind::Workload => "workloads",
            Kind::MeshConfig => "meshconfigs",
            Kind::BackendPolicy => "backendpolicies",
            Kind::AuthorizationPolicy => "authorizationpolicies",
            Kind::FaultInjection => "faultinjections",
            Kind::RateLimitPolicy => "ratelimitpolicies",
            Kind::ExternalService => "externalservices",
        }
    }

    /// The API group (`gateway.networking.k8s.io` or `trellis.dev`).
    pub fn group(self) -> &'static str {
        match self {
            Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::TLSRoute => {
                "gateway.networking.k8s.io"
            }
            _ => TRELLIS_GROUP,
        }
    }

    /// The `apiVersion` written for this kind when Trellis creates one. For `TCPRoute`
    /// and `TLSRoute` that is `v1alpha2`, the only version a Kubernetes API server with the Gateway API
    /// CRDs serves.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::HTTPRoute | Kind::GRPCRoute => GATEWAY_V1,
            Kind::TCPRoute | Kind::TLSRoute => GATEWAY_V1ALPHA2,
            _ => TRELLIS_V1ALPHA1,
        }
    }

    /// The `apiVersion`s accepted for this kind. `TCPRoute` and `TLSRoute` are accepted
    /// as `v1`, like the other routes, and as `v1alpha2`, as published upstream.
    pub fn accepted_api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::TCPRoute | Kind::TLSRoute => &[GATEWAY_V1, GATEWAY_V1ALPHA2],
            Kind::HTTPRoute | Kind::GRPCRoute => &[GATEWAY_V1],
            _ => &[TRELLIS_V1ALPHA1],
        }
    }

    /// Whether objects of this kind live in a namespace. `MeshConfig` is cluster-wide.
    pub fn is_namespaced(self) -> bool {
        self != Kind::MeshConfig
    }

    /// The kind named exactly as in a document's `kind:` field (case-sensitive, as in
    /// Kubernetes).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind a user means on the command line (`trellis get KIND`): the kind name in
    /// any case, its plural, or a short name (`svc`, `wl`, `bp`, `authz`).
    pub fn from_cli(word: &str) -> Option<Kind> {
        let word = word.to_ascii_lowercase();
        let kind = match word.as_str() {
            "httproute" | "httproutes" => Kind::HTTPRoute,
            "grpcroute" | "grpcroutes" => Kind::GRPCRoute,
            "tcproute" | "tcproutes" => Kind::TCPRoute,
            "tlsroute" | "tlsroutes" => Kind::TLSRoute,
            "service" | "services" | "svc" => Kind::Service,
            "workload" | "workloads" | "wl" => Kind::Workload,
            "meshconfig" | "meshconfigs" => Kind::MeshConfig,
            "backendpolicy" | "backendpolicies" | "bp" => Kind::BackendPolicy,
            "authorizationpolicy" | "authorizationpolicies" | "authz" => Kind::AuthorizationPolicy,
            "faultinjection" | "faultinjections" | "fault" | "faults" => Kind::FaultInjection,
            "ratelimitpolicy" | "ratelimitpolicies" | "ratelimit" | "ratelimits" | "rl" => {
                Kind::RateLimitPolicy
            }
            "externalservice" | "externalservices" | "external" | "es" => Kind::ExternalService,
            _ => return None,
        };
        Some(kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_cli_accepts_names_plurals_and_short_names() {
        let cases = [
            ("HTTPRoute", Some(Kind::HTTPRoute)),
            ("httproute", Some(Kind::HTTPRoute)),
            ("httproutes", Some(Kind::HTTPRoute)),
            ("GRPCRoutes", Some(Kind::GRPCRoute)),
            ("grpcroute", Some(Kind::GRPCRoute)),
            ("tcproute", Some(Kind::TCPRoute)),
            ("TCPROUTES", Some(Kind::TCPRoute)),
            ("svc", Some(Kind::Service)),
            ("Service", Some(Kind::Service)),
            ("services", Some(Kind::Service)),
            ("wl", Some(Kind::Workload)),
            ("workloads", Some(Kind::Workload)),
            ("Workload", Some(Kind::Workload)),
            ("meshconfig", Some(Kind::MeshConfig)),
            ("meshconfigs", Some(Kind::MeshConfig)),
            ("bp", Some(Kind::BackendPolicy)),
            ("backendpolicy", Some(Kind::BackendPolicy)),
            ("BackendPolicies", Some(Kind::BackendPolicy)),
            ("authz", Some(Kind::AuthorizationPolicy)),
            ("AuthorizationPolicy", Some(Kind::AuthorizationPolicy)),
            ("authorizationpolicies", Some(Kind::AuthorizationPolicy)),
            ("faults", Some(Kind::FaultInjection)),
            ("FaultInjection", Some(Kind::FaultInjection)),
            ("ratelimits", Some(Kind::RateLimitPolicy)),
            ("RateLimitPolicy", Some(Kind::RateLimitPolicy)),
            ("externalservices", Some(Kind::ExternalService)),
            ("ExternalService", Some(Kind::ExternalService)),
            ("es", Some(Kind::ExternalService)),
            ("route", None),
            ("", None),
            ("pods", None),
            ("services ", None),
        ];
        for (word, want) in cases {
            assert_eq!(Kind::from_cli(word), want, "{word:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
            assert_eq!(Kind::from_cli(kind.plural()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).expect("serializes"),
                serde_json::Value::from(kind.name())
            );
            assert!(kind.accepted_api_versions().contains(&kind.api_version()));
            assert!(kind.api_version().starts_with(kind.group()));
        }
        assert_eq!(Kind::from_name("httproute"), None);
        assert!(!Kind::MeshConfig.is_namespaced());
        assert!(Kind::HTTPRoute.is_namespaced());
    }
}
