//! Table-driven tests over the example documents in `examples/`.

mod errors;
mod examples;
mod fuzz;
mod multi;

/// Every example file, by name.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "externalservice.yaml",
        include_str!("../../examples/externalservice.yaml"),
    ),
    (
        "faultinjection.yaml",
        include_str!("../../examples/faultinjection.yaml"),
    ),
    (
        "httproute-canary.yaml",
        include_str!("../../examples/httproute-canary.yaml"),
    ),
    (
        "httproute-filters.yaml",
        include_str!("../../examples/httproute-filters.yaml"),
    ),
    (
        "grpcroute.yaml",
        include_str!("../../examples/grpcroute.yaml"),
    ),
    (
        "tlsroute.yaml",
        include_str!("../../examples/tlsroute.yaml"),
    ),
    (
        "tcproute.yaml",
        include_str!("../../examples/tcproute.yaml"),
    ),
    ("service.yaml", include_str!("../../examples/service.yaml")),
    (
        "workload.yaml",
        include_str!("../../examples/workload.yaml"),
    ),
    (
        "meshconfig.yaml",
        include_str!("../../examples/meshconfig.yaml"),
    ),
    (
        "backendpolicy.yaml",
        include_str!("../../examples/backendpolicy.yaml"),
    ),
    (
        "authorizationpolicy.yaml",
        include_str!("../../examples/authorizationpolicy.yaml"),
    ),
    (
        "ratelimitpolicy.yaml",
        include_str!("../../examples/ratelimitpolicy.yaml"),
    ),
];

fn example(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .expect("example exists")
}
