//! `trellis explain`: whether a request from one identity to a Service would be allowed,
//! and which authorization rule (or the default) decides; and which route and backends
//! it would take — as the control plane's `GET /api/v1/explain` evaluates them with the
//! proxies' own evaluations.
//!
//! Prints two lines (`allowed by shop/allow-web rule 0`, then
//! `route shop.cart.split (prefix:/cart) → cart-v1.shop 75%, cart-v2.shop 25%`), or with
//! `-o json` the control plane's answer. The exit code is 0 whether the request would be
//! allowed or denied, 1 when it cannot be told.

use std::io::Write;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

use crate::client::{segment, Client, ClientArgs};

/// Arguments of `trellis explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The caller's SPIFFE ID (spiffe://trellis.local/ns/NAMESPACE/sa/ACCOUNT). Leave it
    /// out for a caller without a verified identity (plaintext).
    #[arg(long, value_name = "IDENTITY")]
    from: Option<String>,
    /// The Service called.
    #[arg(long, value_name = "SERVICE")]
    to: String,
    /// The Service's namespace. Default: `default`.
    #[arg(short, long)]
    namespace: Option<String>,
    /// The request's method. Default: GET.
    #[arg(long)]
    method: Option<String>,
    /// The request's path. Default: /.
    #[arg(long)]
    path: Option<String>,
    /// The port the application receives the request on. Default: the first port's
    /// targetPort of a declared Service, else unknown (rules naming ports fail closed).
    #[arg(long)]
    port: Option<u16>,
    /// A request header as NAME:VALUE; may be given more than once.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Line)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// One line: the verdict and what decided it.
    Line,
    /// The control plane's answer, with the request as evaluated and the policies.
    Json,
}

/// Runs `trellis explain`.
pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let answer = client.get(&path(&args)).await?;
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&answer)? + "\n",
        Output::Line => verdict(&answer)? + "\n" + &route_line(&answer["route"]) + "\n",
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // A closed pipe (`trellis explain … | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

/// `/api/v1/explain?…` for the arguments.
fn path(args: &ExplainArgs) -> String {
    let mut query = vec![format!("to={}", segment(&args.to))];
    let optional = [
        ("from", args.from.as_deref()),
        ("namespace", args.namespace.as_deref()),
        ("method", args.method.as_deref()),
        ("path", args.path.as_deref()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            query.push(format!("{key}={}", segment(value)));
        }
    }
    if let Some(port) = args.port {
        query.push(format!("port={port}"));
    }
    for header in &args.headers {
        query.push(format!("header={}", segment(header)));
    }
    format!("/api/v1/explain?{}", query.join("&"))
}

/// The one-line verdict of an explain answer.
fn verdict(answer: &Value) -> anyhow::Result<String> {
    let allowed = answer["allowed"]
        .as_bool()
        .context("the control plane's answer says nothing about `allowed`")?;
    let verb = if allowed { "allowed" } else { "denied" };
    Ok(match &answer["decidedBy"] {
        Value::Object(rule) => format!(
            "{verb} by {} rule {}",
            rule["policy"].as_str().unwrap_or("?"),
            rule["rule"]
        ),
        Value::String(s) if s == "default" => format!(
            "{verb} by default (defaultAuthorization: {})",
            answer["defaultAction"].as_str().unwrap_or("?")
        ),
        Value::String(s) if s == "noAllowMatch" => {
            let allows: Vec<&str> = answer["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["action"] == "allow")
                .filter_map(|p| p["name"].as_str())
                .collect();
            format!("{verb}: no Allow policy matches ({})", allows.join(", "))
        }
        other => bail!("the control plane's answer has an unknown decidedBy: {other}"),
    })
}

/// The route line of an explain answer.
fn route_line(route: &Value) -> String {
    let Some(name) = route["name"].as_str() else {
        return "route: none matches (404)".to_string();
    };
    let mut line = format!("route {name} ({})", route["match"].as_str().unwrap_or("?"));
    if let Some(status) = route["redirectStatus"].as_u64() {
        line.push_str(&format!(" → redirect {status}"));
    } else {
        let backends: Vec<String> = route["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["weight"].as_u64().unwrap_or(0) > 0)
            .map(|b| {
                format!(
                    "{} {}%",
                    b["name"].as_str().unwrap_or("?"),
                    b["percent"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        if backends.is_empty() {
            line.push_str(" → no backend (503)");
        } else {
            line.push_str(&format!(" → {}", backends.join(", ")));
        }
    }
    if let Some(fault) = route["fault"].as_str() {
        line.push_str(&format!("; fault {fault}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verdicts_read_as_one_line() {
        let cases = [
            (
                json!({"allowed": true, "decidedBy": {"policy": "shop/allow-web", "rule": 0}}),
                "allowed by shop/allow-web rule 0",
            ),
            (
                json!({"allowed": false, "decidedBy": "default", "defaultAction": "deny"}),
                "denied by default (defaultAuthorization: deny)",
            ),
            (
                json!({"allowed": false, "decidedBy": "noAllowMatch", "policies": [
                    {"name": "shop/a", "action": "allow"},
                    {"name": "shop/d", "action": "deny"},
                    {"name": "shop/b", "action": "allow"},
                ]}),
                "denied: no Allow policy matches (shop/a, shop/b)",
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(verdict(&answer).expect("verdict"), want);
        }
        assert!(verdict(&json!({"decidedBy": "default"})).is_err());
    }

    #[test]
    fn routes_read_as_one_line() {
        let cases = [
            (
                json!({"name": "shop.cart.split", "match": "prefix:/cart", "backends": [
                    {"name": "cart-v1.shop", "weight": 3, "percent": 75.0},
                    {"name": "cart-v2.shop", "weight": 1, "percent": 25.0},
                    {"name": "cart-v3.shop", "weight": 0, "percent": 0.0},
                ]}),
                "route shop.cart.split (prefix:/cart) → cart-v1.shop 75%, cart-v2.shop 25%",
            ),
            (
                json!({"name": "shop.cart.old", "match": "exact:/old", "redirectStatus": 301,
                       "backends": [{"name": "cart.shop", "weight": 0, "percent": 0.0}]}),
                "route shop.cart.old (exact:/old) → redirect 301",
            ),
            (
                json!({"name": "default", "match": "*", "fault": "shop/chaos",
                       "backends": [{"name": "cart.shop", "weight": 1, "percent": 100.0}]}),
                "route default (*) → cart.shop 100%; fault shop/chaos",
            ),
            (
                json!({"name": "shop.cart.empty", "match": "*",
                       "backends": [{"name": "cart.shop", "weight": 0, "percent": 0.0}]}),
                "route shop.cart.empty (*) → no backend (503)",
            ),
            (json!(null), "route: none matches (404)"),
        ];
        for (route, want) in cases {
            assert_eq!(route_line(&route), want);
        }
    }
}
