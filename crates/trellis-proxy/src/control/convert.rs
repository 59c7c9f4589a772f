//! Wire types to internal types, at the boundary: a compiled `ProxyConfig` from the
//! control plane becomes the proxy's own [`ProxyConfig`], which is then validated like
//! any configuration file. Whatever fails here is NACKed with the reason.

use std::net::SocketAddr;

use trellis_api::authz::AuthorizationConfig;
use trellis_api::grpc_status::GrpcStatus;
use trellis_api::proto::v1 as wire;

use crate::config::{
    self, defaults, BackendConfig, BackendProtocol, DestinationAddress, DestinationTarget,
    Duration, EgressMode, EndpointConfig, ExternalHost, FaultAbortConfig, FaultConfig,
    FaultDelayConfig, HashOn, Header, HeaderModifier, ListenerConfig, ListenerProtocol,
    LoadBalancer, LocalityConfig, MeshService, Mirror, OriginalDestination, OriginateTlsConfig,
    PathMatch, PathModifier, ProxyConfig, Redirect, RetryConfig, Rewrite, RouteConfig,
    RouteFilters, RouteMatch, ValueMatch, WeightedBackend, WorkloadTarget,
};

/// What the control plane does not decide: the proxy's own admin address and limits.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub admin: SocketAddr,
    pub drain_timeout: Duration,
    pub max_header_bytes: usize,
    /// How long a request head may take on a listener the control plane gives no
    /// header-read timeout (it gives none unless told).
    pub header_read_timeout: Duration,
    /// `SO_MARK` for the proxy's own connections (transparent capture skips it).
    pub socket_mark: Option<u32>,
    /// The DNS server that resolves endpoints given by name; `None`: the host's.
    pub resolver: Option<SocketAddr>,
}

/// Converts and validates a snapshot's configuration.
pub fn to_proxy_config(
    wire: &wire::ProxyConfig,
    local: &LocalSettings,
) -> Result<ProxyConfig, config::ConfigError> {
    let listeners = wire
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| listener(l, &format!("listeners[{i}]"), local))
        .collect::<Result<Vec<_>, _>>()?;
    let backends = wire
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend(b, &format!("backends[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let services = wire
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| mesh_service(s, &format!("services[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let external_hosts = wire
        .external_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| external_host(h, &format!("externalHosts[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let config = ProxyConfig {
        listeners,
        backends,
        admin: local.admin,
        drain_timeout: local.drain_timeout,
        max_header_bytes: local.max_header_bytes,
        services,
        external_hosts,
        socket_mark: local.socket_mark,
        resolver: local.resolver,
        tracing: wire.tracing.as_ref().map(|t| config::TracingConfig {
            endpoint: t.endpoint.clone(),
            protocol: if t.protocol == "http" {
                config::OtlpProtocol::Http
            } else {
                config::OtlpProtocol::Grpc
            },
            sampling: t.sampling,
            service_name: t.service_name.clone(),
        }),
        access_log: wire
            .access_log
            .as_ref()
            .map(|log| config::AccessLogConfig::from_wire(&log.format, &log.output))
            .transpose()?,
        max_request_series: usize::try_from(wire.max_request_series)
            .ok()
            .filter(|n| *n > 0),
        request_metrics: true,
    };
    config.validate()?;
    Ok(config)
}

fn address(value: &str, field: &str) -> Result<SocketAddr, config::ConfigError> {
    value.parse().map_err(|_| config::ConfigError::Invalid {
        field: field.to_string(),
        message: format!("invalid address {value:?}: expected IP:PORT"),
    })
}

fn virtual_ip(value: &str, at: &str) -> Result<std::net::Ipv4Addr, config::ConfigError> {
    value.parse().map_err(|_| config::ConfigError::Invalid {
        field: format!("{at}.virtualIp"),
        message: format!("invalid address {value:?}: expected an IPv4 address"),
    })
}

fn mesh_service(s: &wire::MeshService, at: &str) -> Result<MeshService, config::ConfigError> {
    Ok(MeshService {
        name: s.name.clone(),
        namespace: s.namespace.clone(),
        virtual_ip: virtual_ip(&s.virtual_ip, at)?,
    })
}

fn external_host(h: &wire::ExternalHost, at: &str) -> Result<ExternalHost, config::ConfigError> {
    Ok(ExternalHost {
        host: h.host.clone(),
        virtual_ip: virtual_ip(&h.virtual_ip, at)?,
    })
}

fn original_destination(
    table: &wire::OriginalDestination,
    at: &str,
) -> Result<OriginalDestination, config::ConfigError> {
    let targets = table
        .targets
        .iter()
        .enumerate()
        .map(|(j, t)| {
            let addresses = t
                .addresses
                .iter()
                .enumerate()
                .map(|(k, a)| {
                    DestinationAddress::try_from(a.clone()).map_err(|message| {
                        config::ConfigError::Invalid {
                            field: format!("{at}.targets[{j}].addresses[{k}]"),
                            message,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let workload = match &t.workload {
                Some(w) => Some(WorkloadTarget {
                    address: w
                        .address
                        .parse()
                        .map_err(|_| config::ConfigError::Invalid {
                            field: format!("{at}.targets[{j}].workload.address"),
                            message: format!("invalid address {:?}: expected IP:PORT", w.address),
                        })?,
                    identity: w.identity.clone(),
                }),
                None => None,
            };
            Ok(DestinationTarget {
                addresses,
                listener: t.listener.clone(),
                workload,
            })
        })
        .collect::<Result<Vec<_>, config::ConfigError>>()?;
    Ok(OriginalDestination {
        targets,
        egress: match table.egress() {
            wire::EgressMode::AllowAny => EgressMode::AllowAny,
            wire::EgressMode::RegistryOnly => EgressMode::RegistryOnly,
        },
    })
}

fn millis(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

fn listener(
    l: &wire::Listener,
    at: &str,
    local: &LocalSettings,
) -> Result<ListenerConfig, config::ConfigError> {
    Ok(ListenerConfig {
        name: l.name.clone(),
        address: address(&l.address, &format!("{at}.address"))?,
        protocol: match l.protocol() {
            wire::ListenerProtocol::Auto => ListenerProtocol::Auto,
            wire::ListenerProtocol::Http1 => ListenerProtocol::Http1,
            wire::ListenerProtocol::Http2 => ListenerProtocol::Http2,
            wire::ListenerProtocol::Grpc => ListenerProtocol::Grpc,
            wire::ListenerProtocol::Tcp => ListenerProtocol::Tcp,
            wire::ListenerProtocol::Tls => ListenerProtocol::Tls,
        },
        detect_timeout: millis(l.detect_timeout_ms).unwrap_or_else(defaults::detect_timeout),
        idle_timeout: millis(l.idle_timeout_ms).unwrap_or_else(defaults::listener_idle_timeout),
        header_read_timeout: millis(l.header_read_timeout_ms).unwrap_or(local.header_read_timeout),
        routes: l.routes.iter().map(route).collect(),
        mtls: match l.mtls() {
            wire::MtlsMode::Disabled => config::MtlsMode::Disabled,
            wire::MtlsMode::Permissive => config::MtlsMode::Permissive,
            wire::MtlsMode::Strict => config::MtlsMode::Strict,
        },
        authorization: l
            .authorization
            .as_ref()
            .map(|a| AuthorizationConfig::from_wire(a, &format!("{at}.authorization")))
            .transpose()
            .map_err(|e| config::ConfigError::Invalid {
                field: e.path,
                message: e.message,
            })?,
        bind: !l.unbound,
        original_destination: l
            .original_destination
            .as_ref()
            .map(|t| original_destination(t, &format!("{at}.originalDestination")))
            .transpose()?,
        egress: l.egress,
        connect: l.connect,
        rate_limits: l
            .rate_limits
            .iter()
            .map(|r| config::RateLimitConfig {
                name: r.name.clone(),
                requests_per_second: r.requests_per_second,
                burst: (r.burst > 0).then_some(r.burst),
                per: r.key().into(),
                share: (r.share_total > 0).then_some(config::RateShare {
                    weight: r.share_weight,
                    total: r.share_total,
                }),
            })
            .collect(),
    })
}

fn route(r: &wire::Route) -> RouteConfig {
    RouteConfig {
        name: (!r.name.is_empty()).then(|| r.name.clone()),
        matches: r.r#match.as_ref().map(route_match),
        backend: None,
        backends: r
            .backends
            .iter()
            .map(|b| WeightedBackend {
                name: b.name.clone(),
                weight: b.weight,
                request_headers: b.request_headers.as_ref().map(header_modifier),
                response_headers: b.response_headers.as_ref().map(header_modifier),
            })
            .collect(),
        timeout: millis(r.timeout_ms),
        filters: r.filters.as_ref().map(filters).unwrap_or_default(),
        backend_timeout: millis(r.backend_timeout_ms),
        retry: r.retry.as_ref().map(|retry| RetryConfig {
            attempts: retry.attempts,
            // Out of range is refused by validation, as 0 is.
            codes: retry
                .codes
                .iter()
                .map(|c| u16::try_from(*c).unwrap_or(0))
                .collect(),
            backoff: Duration::from_millis(retry.backoff_ms),
            // Unknown codes are left out: a newer control plane's status this proxy
            // cannot name is one it never retries.
            grpc_statuses: retry
                .grpc_statuses
                .iter()
                .filter_map(|c| GrpcStatus::from_code(*c))
                .collect(),
        }),
        fault: r.fault.as_ref().map(fault),
    }
}

fn filters(f: &wire::RouteFilters) -> RouteFilters {
    let path = |p: &Option<wire::PathModifier>| match p.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(wire::path_modifier::Kind::Full(v)) => Some(PathModifier::Full(v.clone())),
        Some(wire::path_modifier::Kind::Prefix(v)) => Some(PathModifier::Prefix(v.clone())),
        None => None,
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    RouteFilters {
        request_headers: f.request_headers.as_ref().map(header_modifier),
        response_headers: f.response_headers.as_ref().map(header_modifier),
        redirect: f.redirect.as_ref().map(|r| Redirect {
            scheme: non_empty(&r.scheme),
            hostname: non_empty(&r.hostname),
            path: path(&r.path),
            // Out of range is refused by validation, as port 0 is.
            port: (r.port != 0).then(|| u16::try_from(r.port).unwrap_or(0)),
            status_code: u16::try_from(r.status_code).unwrap_or(0),
        }),
        rewrite: f.rewrite.as_ref().map(|r| Rewrite {
            hostname: non_empty(&r.hostname),
            path: path(&r.path),
        }),
        mirrors: f
            .mirrors
            .iter()
            .map(|m| Mirror {
                backend: m.backend.clone(),
                numerator: m.numerator,
                denominator: m.denominator,
            })
            .collect(),
    }
}

fn header_modifier(m: &wire::HeaderModifier) -> HeaderModifier {
    let headers = |list: &[wire::Header]| {
        list.iter()
            .map(|h| Header {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    HeaderModifier {
        set: headers(&m.set),
        add: headers(&m.add),
        remove: m.remove.clone(),
    }
}

fn values(list: &[wire::ValueMatch]) -> Vec<ValueMatch> {
    list.iter()
        .map(|v| {
            let (exact, regex) = match &v.kind {
                Some(wire::value_match::Kind::Exact(e)) => (Some(e.clone()), None),
                Some(wire::value_match::Kind::Regex(r)) => (None, Some(r.clone())),
                None => (None, None),
            };
            ValueMatch {
                name: v.name.clone(),
                exact,
                regex,
            }
        })
        .collect()
}

fn fault(f: &wire::Fault) -> FaultConfig {
    FaultConfig {
        name: (!f.name.is_empty()).then(|| f.name.clone()),
        headers: values(&f.headers),
        delay: f.delay.as_ref().map(|d| FaultDelayConfig {
            fixed: Duration::from_millis(d.fixed_ms),
            percent: d.percent,
        }),
        abort: f.abort.as_ref().map(|a| FaultAbortConfig {
            // Out of range is refused by validation, as 0 is.
            http_status: (a.http_status != 0).then(|| u16::try_from(a.http_status).unwrap_or(0)),
            grpc_status: (a.grpc_status != 0).then_some(a.grpc_status),
            percent: a.percent,
        }),
    }
}

fn route_match(m: &wire::RouteMatch) -> RouteMatch {
    RouteMatch {
        path: m.path.as_ref().and_then(|p| match &p.kind {
            Some(wire::path_match::Kind::Exact(v)) => Some(PathMatch::Exact(v.clone())),
            Some(wire::path_match::Kind::Prefix(v)) => Some(PathMatch::Prefix(v.clone())),
            Some(wire::path_match::Kind::Regex(v)) => Some(PathMatch::Regex(v.clone())),
            None => None,
        }),
        headers: values(&m.headers),
        query: values(&m.query),
        method: (!m.method.is_empty()).then(|| m.method.clone()),
        hosts: m.hosts.clone(),
    }
}

fn backend(b: &wire::Backend, at: &str) -> Result<BackendConfig, config::ConfigError> {
    let endpoints = b
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(EndpointConfig {
                address: address(&e.address, &format!("{at}.endpoints[{i}].address"))?,
                weight: e.weight.max(1),
                identity: (!e.identity.is_empty()).then(|| e.identity.clone()),
                zone: (!e.zone.is_empty()).then(|| e.zone.clone()),
                hostname: (!e.hostname.is_empty()).then(|| e.hostname.clone()),
            })
        })
        .collect::<Result<Vec<_>, config::ConfigError>>()?;
    Ok(BackendConfig {
        name: b.name.clone(),
        protocol: match b.protocol() {
            wire::BackendProtocol::Http1 => BackendProtocol::Http1,
            wire::BackendProtocol::Http2 => BackendProtocol::Http2,
        },
        endpoints,
        load_balancer: match b.load_balancer() {
            wire::LoadBalancer::Ewma => LoadBalancer::Ewma,
            wire::LoadBalancer::RoundRobin => LoadBalancer::RoundRobin,
            wire::LoadBalancer::LeastRequest => LoadBalancer::LeastRequest,
            wire::LoadBalancer::ConsistentHash => LoadBalancer::ConsistentHash,
        },
        hash_on: b.hash_on.as_ref().map(|h| match &h.key {
            Some(wire::hash_on::Key::Header(name)) => HashOn {
                header: Some(name.clone()),
                ..HashOn::default()
            },
            Some(wire::hash_on::Key::Cookie(name)) => HashOn {
                cookie: Some(name.clone()),
                ..HashOn::default()
            },
            Some(wire::hash_on::Key::SourceIdentity(_)) => HashOn {
                source_identity: Some(true),
                ..HashOn::default()
            },
            None => HashOn::default(),
        }),
        locality: b.locality.as_ref().map(|l| LocalityConfig {
            zone: l.zone.clone(),
            min_healthy_percent: l.min_healthy_percent.clamp(1, 100),
            zone_size: Some(l.zone_size),
        }),
        connect_timeout: millis(b.connect_timeout_ms).unwrap_or_else(defaults::connect_timeout),
        idle_timeout: defaults::pool_idle_timeout(),
        resilience: b
            .resilience
            .as_ref()
            .map(|r| config::ResilienceConfig::from_spec(&r.into()))
            .unwrap_or_default(),
        originate_tls: b.originate_tls.as_ref().map(|t| OriginateTlsConfig {
            server_name: t.server_name.clone(),
            ca_pem: (!t.ca_pem.is_empty()).then(|| t.ca_pem.clone()),
            ca_file: (!t.ca_file.is_empty()).then(|| t.ca_file.clone().into()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalSettings {
        LocalSettings {
            admin: "127.0.0.1:0".parse().expect("addr"),
            drain_timeout: Duration::from_secs(1),
            max_header_bytes: 65536,
            header_read_timeout: Duration::from_secs(7),
            socket_mark: None,
            resolver: None,
        }
    }

    fn sample() -> wire::ProxyConfig {
        wire::ProxyConfig {
            listeners: vec![wire::Listener {
                name: "outbound-ratings".into(),
                address: "127.0.0.1:0".into(),
                protocol: wire::ListenerProtocol::Http1 as i32,
                routes: vec![wire::Route {
                    name: "canary".into(),
                    r#match: Some(wire::RouteMatch {
                        path: Some(wire::PathMatch {
                            kind: Some(wire::path_match::Kind::Prefix("/api".into())),
                        }),
                        headers: vec![wire::ValueMatch {
                            name: "x-canary".into(),
                            kind: Some(wire::value_match::Kind::Exact("1".into())),
                        }],
                        query: vec![],
                        method: "GET".into(),
                        hosts: vec!["ratings".into()],
                    }),
                    backends: vec![
                        wire::WeightedBackend {
                            name: "ratings-v1".into(),
                            weight: 90,
                            ..Default::default()
                        },
                        wire::WeightedBackend {
                            name: "ratings-v2".into(),
                            weight: 10,
                            response_headers: Some(wire::HeaderModifier {
                                set: vec![wire::Header {
                                    name: "x-version".into(),
                                    value: "v2".into(),
                                }],
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ],
                    timeout_ms: Some(1500),
                    backend_timeout_ms: Some(500),
                    retry: Some(wire::Retry {
                        attempts: 2,
                        codes: vec![503],
                        backoff_ms: 10,
                        grpc_statuses: vec![14, 99],
                    }),
                    fault: Some(wire::Fault {
                        name: "bookinfo/chaos".into(),
                        headers: vec![],
                        delay: Some(wire::FaultDelay {
                            fixed_ms: 2000,
                            percent: 50,
                        }),
                        abort: Some(wire::FaultAbort {
                            http_status: 0,
                            grpc_status: 14,
                            percent: 10,
                        }),
                    }),
                    filters: Some(wire::RouteFilters {
                        request_headers: Some(wire::HeaderModifier {
                            remove: vec!["cookie".into()],
                            ..Default::default()
                        }),
                        rewrite: Some(wire::Rewrite {
                            hostname: "ratings.internal".into(),
                            path: Some(wire::PathModifier {
                                kind: Some(wire::path_modifier::Kind::Prefix("/v2".into())),
                            }),
                        }),
                        mirrors: vec![wire::Mirror {
                            backend: "ratings-v2".into(),
                            numerator: 1,
                            denominator: 3,
                        }],
                        ..Default::default()
                    }),
                }],
                detect_timeout_ms: None,
                idle_timeout_ms: Some(60_000),
                header_read_timeout_ms: Some(4_000),
                mtls: wire::MtlsMode::Strict as i32,
                authorization: Some(wire::Authorization {
                    default_action: wire::AuthorizationAction::Deny as i32,
                    port: 9080,
                    policies: vec![wire::AuthorizationPolicy {
                        name: "shop/allow-web".into(),
                        action: wire::AuthorizationAction::Allow as i32,
                        rules: vec![wire::AuthorizationRule {
                            from: vec![wire::AuthorizationSource {
                                identities: vec![],
                                namespaces: vec!["shop".into()],
                            }],
                            to: vec![],
                        }],
                    }],
                }),
                ..Default::default()
            }],
            backends: ["ratings-v1", "ratings-v2"]
                .iter()
                .map(|n| wire::Backend {
                    name: (*n).into(),
                    protocol: wire::BackendProtocol::Http2 as i32,
                    endpoints: vec![wire::Endpoint {
                        address: "127.0.0.1:7143".into(),
                        weight: 1,
                        identity: "spiffe://trellis.local/ns/default/sa/ratings".into(),
                        zone: "eu-1a".into(),
                        hostname: String::new(),
                    }],
                    load_balancer: wire::LoadBalancer::ConsistentHash as i32,
                    hash_on: Some(wire::HashOn {
                        key: Some(wire::hash_on::Key::SourceIdentity(true)),
                    }),
                    locality: Some(wire::Locality {
                        zone: "eu-1a".into(),
                        min_healthy_percent: 60,
                        zone_size: 3,
                    }),
                    connect_timeout_ms: Some(250),
                    resilience: Some(wire::Resilience {
                        circuit_breaker: Some(wire::CircuitBreaker {
                            max_requests: Some(9),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    originate_tls: None,
                })
                .collect(),
            services: vec![],
            external_hosts: vec![],
            tracing: Some(wire::Tracing {
                endpoint: "http://127.0.0.1:4318".into(),
                protocol: "http".into(),
                sampling: 0.5,
                service_name: "web".into(),
            }),
            access_log: Some(wire::AccessLog {
                format: "text".into(),
                output: "/var/log/trellis/access.log".into(),
            }),
            max_request_series: 500,
        }
    }

    #[test]
    fn converts_external_hosts_and_tls_origination() {
        let mut wire = sample();
        wire.external_hosts.push(wire::ExternalHost {
            host: "api.payments.example".into(),
            virtual_ip: "240.240.9.9".into(),
        });
        wire.listeners[0].egress = true;
        wire.backends.push(wire::Backend {
            name: "payments".into(),
            endpoints: vec![wire::Endpoint {
                address: "0.0.0.0:443".into(),
                weight: 1,
                hostname: "api.payments.example".into(),
                ..Default::default()
            }],
            originate_tls: Some(wire::OriginateTls {
                server_name: "api.payments.example".into(),
                ca_file: "/etc/trellis/payments-ca.pem".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let config = to_proxy_config(&wire, &local()).expect("valid");
        assert_eq!(
            config.external_hosts[0].virtual_ip.to_string(),
            "240.240.9.9"
        );
        assert!(config.listeners[0].egress);
        let payments = &config.backends[2];
        assert_eq!(
            payments.endpoints[0].hostname.as_deref(),
            Some("api.payments.example")
        );
        let tls = payments.originate_tls.as_ref().expect("origination");
        assert_eq!(tls.server_name, "api.payments.example");
        assert_eq!(tls.ca_pem, None);
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/trellis/payments-ca.pem"))
        );
    }

    #[test]
    fn a_listener_without_a_header_read_timeout_takes_the_sidecars() {
        let mut wire = sample();
        wire.listeners[0].header_read_timeout_ms = None;
        let config = to_proxy_config(&wire, &local()).expect("valid");
        assert_eq!(
            config.listeners[0].header_read_timeout,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn converts_every_field() {
        let config = to_proxy_config(&sample(), &local()).expect("valid");
        let tracing = config.tracing.as_ref().expect("tracing");
        assert_eq!(tracing.protocol, config::OtlpProtocol::Http);
        assert_eq!(
            (tracing.sampling, tracing.service_name.as_str()),
            (0.5, "web")
        );
        let log = config.access_log.as_ref().expect("access log");
        assert_eq!(log.format, config::AccessLogFormat::Text);
        assert_eq!(log.output.to_string(), "/var/log/trellis/access.log");
        assert_eq!(config.max_request_series, Some(500));
        let b = &config.backends[0];
        assert_eq!(b.endpoints[0].zone.as_deref(), Some("eu-1a"));
        assert_eq!(
            b.hash_on.as_ref().and_then(|h| h.source_identity),
            Some(true)
        );
        assert_eq!(
            b.locality,
            Some(LocalityConfig {
                zone: "eu-1a".into(),
                min_healthy_percent: 60,
                zone_size: Some(3),
            })
        );
        let l = &config.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Http1);
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.header_read_timeout, Duration::from_secs(4));
        let r = &l.routes[0];
        assert_eq!(r.name.as_deref(), Some("canary"));
        assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(r.backend_timeout, Some(Duration::from_millis(500)));
        let fault = r.fault.as_ref().expect("fault");
        assert_eq!(fault.name.as_deref(), Some("bookinfo/chaos"));
        assert_eq!(
            fault.delay,
            Some(FaultDelayConfig {
                fixed: Duration::from_secs(2),
                percent: 50
            })
        );
        assert_eq!(
            fault.abort,
            Some(FaultAbortConfig {
                http_status: None,
                grpc_status: Some(14),
                percent: 10
            })
        );
        assert_eq!(
            r.retry,
            Some(RetryConfig {
                attempts: 2,
                codes: vec![503],
                backoff: Duration::from_millis(10),
                grpc_statuses: vec![GrpcStatus::Unavailable],
            })
        );
        assert_eq!(r.backends[1].weight, 10);
        let set = &r.backends[1]
            .response_headers
            .as_ref()
            .expect("headers")
            .set;
        assert_eq!(
            (set[0].name.as_str(), set[0].value.as_str()),
            ("x-version", "v2")
        );
        let f = &r.filters;
        assert_eq!(
            f.request_headers.as_ref().expect("headers").remove,
            ["cookie"]
        );
        let rewrite = f.rewrite.as_ref().expect("rewrite");
        assert_eq!(rewrite.hostname.as_deref(), Some("ratings.internal"));
        assert_eq!(rewrite.path, Some(PathModifier::Prefix("/v2".into())));
        assert_eq!((f.mirrors[0].numerator, f.mirrors[0].denominator), (1, 3));
        let m = r.matches.as_ref().expect("match");
        assert_eq!(m.path, Some(PathMatch::Prefix("/api".into())));
        assert_eq!(m.method.as_deref(), Some("GET"));
        assert_eq!(m.hosts, ["ratings"]);
        let b = &config.backends[0];
        assert_eq!(
            (b.protocol, b.load_balancer),
            (BackendProtocol::Http2, LoadBalancer::ConsistentHash)
        );
        assert_eq!(b.connect_timeout, Duration::from_millis(250));
        // What the policy set, over the defaults.
        let breaker = b.resilience.circuit_breaker;
        assert_eq!((breaker.max_requests, breaker.max_connections), (9, 1024));
        assert!(b.resilience.adaptive_concurrency.enabled);
        assert_eq!(l.mtls, config::MtlsMode::Strict);
        let authz = l.authorization.as_ref().expect("authorization");
        assert_eq!(
            (authz.default_action, authz.port),
            (trellis_api::authz::Action::Deny, Some(9080))
        );
        assert_eq!(authz.policies[0].name, "shop/allow-web");
        assert_eq!(authz.policies[0].rules[0].from[0].namespaces, ["shop"]);
        assert_eq!(
            b.endpoints[0].identity.as_deref(),
            Some("spiffe://trellis.local/ns/default/sa/ratings")
        );
    }

    #[test]
    fn bad_snapshots_are_refused_with_the_field() {
        let mut bad_address = sample();
        bad_address.backends[0].endpoints[0].address = "nowhere".into();
        let mut dangling = sample();
        dangling.backends.pop();
        let mut bad_regex = sample();
        bad_regex.listeners[0].routes[0].r#match = Some(wire::RouteMatch {
            path: Some(wire::PathMatch {
                kind: Some(wire::path_match::Kind::Regex("(".into())),
            }),
            ..Default::default()
        });
        let mut bad_identity = sample();
        if let Some(a) = &mut bad_identity.listeners[0].authorization {
            a.policies[0].rules[0].from[0].identities = vec!["web".into()];
        }
        let mut bad_action = sample();
        if let Some(a) = &mut bad_action.listeners[0].authorization {
            a.default_action = 9;
        }
        let cases = [
            (
                bad_identity,
                "listeners[0].authorization.policies[0].rules[0].from[0].identities[0]: \"web\" is not an identity pattern",
            ),
            (
                bad_action,
                "listeners[0].authorization.defaultAction: unknown action 9",
            ),
            (
                bad_address,
                "backends[0].endpoints[0].address: invalid address",
            ),
            (
                dangling,
                "listeners[0].routes[0].filters.mirrors[0].backend: no backend named \"ratings-v2\"",
            ),
            (
                bad_regex,
                "listeners[0].routes[0].match.path.regex: invalid regular expression",
            ),
        ];
        for (config, want) in cases {
            let err = to_proxy_config(&config, &local())
                .expect_err(want)
                .to_string();
            assert!(err.starts_with(want), "got {err:?}");
        }
    }
}
