//! `trellis token create` and `trellis ca show|rotate`: the CA through the control
//! plane's HTTP API.

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::{Client, ClientArgs};

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
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
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
