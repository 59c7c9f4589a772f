//! `trellis check --kubernetes`: before an install (`--pre`), whether the cluster can
//! take Trellis and the caller may install it; after, whether the control plane runs,
//! injects and serves its proxies ([`trellis_kubernetes::check`]), then what its API
//! says about certificates and proxies (as `trellis check` in universal mode).

use std::path::PathBuf;

use trellis_kubernetes::check::{self, Finding, Level};
use trellis_kubernetes::install::{InstallSettings, Manifests, DEFAULT_NAMESPACE};

use crate::identity::{control_plane_findings, CheckArgs};

/// The flags of `trellis check` for Kubernetes.
#[derive(Debug, clap::Args)]
pub struct KubernetesCheckArgs {
    /// Check Trellis on Kubernetes: the API server's version, the Gateway API CRDs,
    /// then the installed control plane (replicas, webhook, proxies, certificates).
    #[arg(long)]
    pub kubernetes: bool,
    /// Before installing: the cluster, and whether you may create what the install
    /// creates.
    #[arg(long, requires = "kubernetes")]
    pub pre: bool,
    /// The kubeconfig to use, instead of the default one (`KUBECONFIG`,
    /// `~/.kube/config`, or the Pod's ServiceAccount).
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The control plane's namespace.
    #[arg(long = "namespace", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
}

pub async fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let options = &args.kubernetes;
    let client = trellis_kubernetes::client::connect(options.kubeconfig.as_deref()).await?;
    let findings = if options.pre {
        let settings = InstallSettings {
            namespace: options.namespace.clone(),
            ..InstallSettings::default()
        };
        check::before_install(&client, &Manifests::new(&settings)).await
    } else {
        check::after_install(&client, &options.namespace).await
    };
    for finding in &findings {
        println!("{finding}");
    }
    let mut failed = findings.iter().filter(|f| f.level == Level::Fail).count();
    let mut warnings = findings.iter().filter(|f| f.level == Level::Warn).count();
    if !options.pre {
        match control_plane_findings(args).await {
            Ok(api) => {
                for line in &api.lines {
                    println!("{line}");
                }
                warnings += api.warnings;
            }
            Err(e) => {
                let hint = format!(
                    "{e:#} (reach it with `kubectl -n {} port-forward svc/trellis-control 7180` and --control)",
                    options.namespace
                );
                println!("{}", Finding::new(Level::Fail, hint));
                failed += 1;
            }
        }
    }
    match (failed, warnings) {
        (0, 0) => Ok(()),
        (0, w) => anyhow::bail!("{w} warning(s)"),
        (f, w) => anyhow::bail!("{f} check(s) failed, {w} warning(s)"),
    }
}
