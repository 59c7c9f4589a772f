//! `trellis install kubernetes` and `trellis uninstall kubernetes`: print the manifests
//! that install the control plane in a cluster, or what to delete to remove it, for
//! `kubectl apply -f -` and `kubectl delete -f -`. Nothing here talks to a cluster.

use std::io::Write;

use anyhow::Context;
use trellis_kubernetes::install::{
    default_image, FailurePolicy, InstallSettings, Manifests, DEFAULT_NAMESPACE,
};

/// Where to install.
#[derive(Debug, clap::Subcommand)]
pub enum InstallCommand {
    /// Print the manifests of a control plane on Kubernetes (Namespace, CRDs, RBAC,
    /// Deployment, PodDisruptionBudget, Service, injection webhook):
    /// `trellis install kubernetes | kubectl apply -f -`.
    Kubernetes(InstallArgs),
}

/// Where to uninstall from.
#[derive(Debug, clap::Subcommand)]
pub enum UninstallCommand {
    /// Print what `install kubernetes` created, webhook first, for
    /// `trellis uninstall kubernetes | kubectl delete -f -`.
    Kubernetes(UninstallArgs),
}

/// Flags of `trellis install kubernetes`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Namespace of the control plane; never injected.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Image with the `trellis` binary, for the control plane and the sidecars
    /// (deploy/kubernetes/Dockerfile builds it). Default `trellis:<version>`.
    #[arg(long)]
    pub image: Option<String>,
    /// Control-plane replicas; they elect a leader for singleton work.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..))]
    pub replicas: i32,
    /// What the API server does with a new Pod of an injected namespace when the
    /// injector cannot answer: `Fail` refuses it, `Ignore` admits it without a sidecar.
    #[arg(long, default_value_t = FailurePolicy::Fail)]
    pub webhook_failure_policy: FailurePolicy,
}

/// Flags of `trellis uninstall kubernetes`.
#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Namespace the control plane was installed in.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Delete the CustomResourceDefinitions too, and with them every MeshConfig,
    /// BackendPolicy, AuthorizationPolicy, FaultInjection, RateLimitPolicy and
    /// ExternalService in the cluster.
    #[arg(long)]
    pub crds: bool,
}

pub fn install(command: InstallCommand) -> anyhow::Result<()> {
    let InstallCommand::Kubernetes(args) = command;
    let settings = InstallSettings {
        namespace: args.namespace,
        image: args.image.unwrap_or_else(default_image),
        replicas: args.replicas,
        failure_policy: args.webhook_failure_policy,
    };
    print(&Manifests::new(&settings).to_yaml()?)
}

pub fn uninstall(command: UninstallCommand) -> anyhow::Result<()> {
    let UninstallCommand::Kubernetes(args) = command;
    let settings = InstallSettings {
        namespace: args.namespace,
        ..InstallSettings::default()
    };
    print(&Manifests::new(&settings).deletions_yaml(args.crds)?)
}

fn print(yaml: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(yaml.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write the manifests to standard output")
}
