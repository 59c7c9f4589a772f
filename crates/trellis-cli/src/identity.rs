//! `trellis token create` and `trellis ca show|rotate`: the CA through the control
//! plane's HTTP API.

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};
use crate::resources::table::{parse_rfc3339, span, text};

/// `trellis token …`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a bootstrap token bound to one workload identity
    /// (`spiffe://<trust domain>/ns/NAMESPACE/sa/SERVICE_ACCOUNT`). A proxy presents it
    /// to register and get its certificate; the CA signs for that identity only.
    Create(TokenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The service the token is for.
    #[arg(long)]
    service: String,
    /// Namespace of the workload. Default: `default`.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    /// Service account of the identity. Default: the service name.
    #[arg(long)]
    service_account: Option<String>,
    /// How long the token may be used to register (`1h`, `30m`, up to `720h`).
    #[arg(long, default_value = "1h")]
    ttl: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// `trellis ca …`
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// The trust domain, the signing CA and the trust anchors, with their expiry, and
    /// where a rotation stands.
    Show(CaArgs),
    /// Rotate the trust anchor: distribute a new root beside the old, re-issue every
    /// workload certificate from it, then retire the old root. Runs in the control
    /// plane; `trellis ca show` follows it.
    Rotate {
        /// Time between the steps: half before re-issuing, half before retiring.
        #[arg(long, default_value = "60s")]
        overlap: String,
        #[command(flatten)]
        args: CaArgs,
    },
    /// Print a new random key for `trellis control --ca-encryption-key`, which
    /// encrypts the CA's keys and the admin token in the store. Keep it outside the
    /// store's reach (a secrets manager, a file only the control plane reads).
    EncryptionKey,
}

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = command;
    let body = json!({
        "service": args.service,
        "namespace": args.namespace,
        "serviceAccount": args.service_account,
        "ttl": args.ttl,
    });
    let answer = Client::new(&args.client)?
        .post("/api/v1/tokens", body.to_string())
        .await?;
    let token = answer["token"]
        .as_str()
        .context("the answer has no token")?;
    eprintln!(
        "token for {} until {}",
        text(&answer["identity"]),
        text(&answer["expiresAt"])
    );
    println!("{token}");
    Ok(())
}

pub async fn ca(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Show(args) => {
            let ca = Client::new(&args.client)?.get("/api/v1/ca").await?;
            print!("{}", describe(&ca));
            Ok(())
        }
        CaCommand::Rotate { overlap, args } => {
            let body = json!({ "overlap": overlap });
            let answer = Client::new(&args.client)?
                .post("/api/v1/ca/rotate", body.to_string())
                .await?;
            println!(
                "rotation started: new root {}; the old root is retired after {overlap}",
                text(&answer["newRoot"])
            );
            Ok(())
        }
        CaCommand::EncryptionKey => {
            println!("{}", trellis_identity::SealingKey::generate_hex()?);
            Ok(())
        }
    }
}

/// The CA as a few aligned lines.
fn describe(ca: &Value) -> String {
    let cert = |c: &Value| {
        format!(
            "{}  expires {} ({} days)  sha256 {}",
            text(&c["subject"]),
            text(&c["notAfter"]),
            c["secondsToExpiry"].as_u64().unwrap_or(0) / 86_400,
            text(&c["fingerprint"]).get(..16).unwrap_or_default(),
        )
    };
    let mut out = format!("Trust domain:  {}\n", text(&ca["trustDomain"]));
    out.push_str(&format!("Signing CA:    {}\n", cert(&ca["signer"])));
    out.push_str("Trust anchors:\n");
    for anchor in ca["trustAnchors"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {}\n", cert(anchor)));
    }
    let rotation = &ca["rotation"];
    out.push_str(&format!("Rotation:      {}", text(&rotation["phase"])));
    if let Some(root) = rotation["newRoot"].as_str() {
        out.push_str(&format!(
            " (new root {})",
            root.get(..16).unwrap_or_default()
        ));
    }
    if let Some(error) = rotation["error"].as_str() {
        out.push_str(&format!(": {error}"));
    }
    out.push('\n');
    out
}

/// Flags of `trellis check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Warn about a trust anchor or the signing CA that expires within this long.
    #[arg(long, default_value = "720h")]
    ca_within: String,
    /// Warn about a workload certificate that expires within this long (they are
    /// renewed at about half their life, so one this close was not renewed).
    #[arg(long, default_value = "1h")]
    cert_within: String,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    pub kubernetes: crate::check_kubernetes::KubernetesCheckArgs,
}

/// `trellis check`: what expires soon (and with --kubernetes, whether the cluster is
/// ready for Trellis or Trellis works in it). Exit code 1 when anything is wrong.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    if args.kubernetes.kubernetes {
        return crate::check_kubernetes::run(&args).await;
    }
    let findings = control_plane_findings(&args).await?;
    for line in &findings.lines {
        println!("{line}");
    }
    if findings.warnings > 0 {
        anyhow::bail!("{} warning(s)", findings.warnings);
    }
    Ok(())
}

/// What the control plane's API says about its CA and its proxies' certificates.
pub async fn control_plane_findings(args: &CheckArgs) -> anyhow::Result<Findings> {
    let ca_within = crate::control::parse_duration(&args.ca_within)
        .map_err(|e| anyhow::anyhow!("--ca-within: {e}"))?
        .as_secs();
    let cert_within = crate::control::parse_duration(&args.cert_within)
        .map_err(|e| anyhow::anyhow!("--cert-within: {e}"))?
        .as_secs();
    let client = Client::new(&args.client)?;
    let ca = client.get("/api/v1/ca").await?;
    let proxies = client.get("/api/v1/proxies").await?;
    let mut findings = expiry_findings(&ca, &proxies, ca_within, cert_within, now_secs());
    if args.kubernetes.kubernetes {
        sync_findings(&mut findings, &proxies);
    }
    Ok(findings)
}

/// Whether every connected proxy serves the latest configuration.
fn sync_findings(findings: &mut Findings, proxies: &Value) {
    let items = proxies["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let behind: Vec<String> = items
        .iter()
        .filter(|p| p["state"] != "synced")
        .map(|p| {
            format!(
                "{}/{} ({})",
                text(&p["namespace"]),
                text(&p["workload"]),
                text(&p["state"])
            )
        })
        .collect();
    if behind.is_empty() {
        findings.note(
            false,
            format!("{} proxies connected, all synced", items.len()),
        );
    } else {
        findings.note(true, format!("proxies not synced: {}", behind.join(", ")));
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What `check` prints, and how many lines are warnings.
#[derive(Debug, Default, PartialEq)]
pub struct Findings {
    pub lines: Vec<String>,
    pub warnings: usize,
}

impl Findings {
    fn note(&mut self, warning: bool, line: String) {
        self.warnings += usize::from(warning);
        let tag = if warning { "WARN" } else { "ok  " };
        self.lines.push(format!("{tag}  {line}"));
    }
}

fn expiry_findings(
    ca: &Value,
    proxies: &Value,
    ca_within: u64,
    cert_within: u64,
    now: u64,
) -> Findings {
    let mut findings = Findings::default();
    let mut ca_cert = |what: &str, c: &Value| {
        let left = c["secondsToExpiry"].as_u64().unwrap_or(0);
        findings.note(
            left <= ca_within,
            format!(
                "{what} {} expires {} ({})",
                text(&c["subject"]),
                text(&c["notAfter"]),
                in_words(left)
            ),
        );
    };
    ca_cert("signing CA", &ca["signer"]);
    for anchor in ca["trustAnchors"].as_array().into_iter().flatten() {
        ca_cert("trust anchor", anchor);
    }
    for p in proxies["items"].as_array().into_iter().flatten() {
        let name = format!("proxy {}/{}", text(&p["namespace"]), text(&p["workload"]));
        match p["certificateExpires"].as_str() {
            None => findings.note(true, format!("{name} has no certificate")),
            Some(expires) => {
                let left = seconds_until(expires, now);
                findings.note(
                    left <= cert_within,
                    format!("{name} certificate expires {expires} ({})", in_words(left)),
                );
            }
        }
    }
    findings
}

/// Seconds from `now` until an RFC 3339 UTC time; 0 when past or unreadable.
fn seconds_until(rfc3339: &str, now: u64) -> u64 {
    parse_rfc3339(rfc3339).map_or(0, |t| t.saturating_sub(now))
}

fn in_words(secs: u64) -> String {
    match secs {
        0 => "expired".to_string(),
        _ => format!("in {}", span(secs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_about_what_expires_within_the_windows() {
        let now = 1_800_000_000;
        let ca = json!({
            "signer": {"subject": "CN=root", "notAfter": "2030", "secondsToExpiry": 90 * 86_400},
            "trustAnchors": [
                {"subject": "CN=root", "notAfter": "2030", "secondsToExpiry": 90 * 86_400},
                {"subject": "CN=old", "notAfter": "2027", "secondsToExpiry": 86_400},
            ],
        });
        let at = |secs: u64| {
            trellis_api::meta::rfc3339(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(now + secs),
            )
        };
        let proxies = json!({"items": [
            {"namespace": "shop", "workload": "books-1", "certificateExpires": at(12 * 3600)},
            {"namespace": "shop", "workload": "web-1", "certificateExpires": at(600)},
            {"namespace": "shop", "workload": "legacy-1"},
        ]});
        let f = expiry_findings(&ca, &proxies, 30 * 86_400, 3600, now);
        let tags: Vec<&str> = f.lines.iter().map(|l| &l[..4]).collect();
        assert_eq!(
            tags,
            ["ok  ", "ok  ", "WARN", "ok  ", "WARN", "WARN"],
            "{:#?}",
            f.lines
        );
        assert_eq!(f.warnings, 3);
        assert!(f.lines[2].contains("trust anchor CN=old"), "{}", f.lines[2]);
        assert!(f.lines[4].ends_with("(in 10m)"), "{}", f.lines[4]);
        assert_eq!(f.lines[5], "WARN  proxy shop/legacy-1 has no certificate");
    }
}
