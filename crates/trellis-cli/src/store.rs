//! `trellis store migrate`: moves an embedded installation's state (resources, the CA,
//! the admin token) into an etcd cluster, so that several control planes can share it.

use std::path::PathBuf;

use anyhow::Context;
use trellis_control::api::token;
use trellis_control::store::migrate::migrate;
use trellis_control::store::{EmbeddedStore, EtcdStore, Expect, Store};

use crate::control::{default_data_dir, EtcdArgs};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the embedded store of a data directory into an empty etcd prefix. Stop the
    /// control plane first; start it again with `--store` naming the cluster.
    Migrate(MigrateArgs),
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the installation to move. Default that of
    /// `trellis control`.
    #[arg(long, value_name = "DATA_DIR")]
    from: Option<PathBuf>,
    /// The etcd cluster, `etcd://host:port[,host:port…]`.
    #[arg(long, value_name = "URL")]
    to: String,
    #[command(flatten)]
    etcd: EtcdArgs,
}

pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Migrate(args) = command;
    let data_dir = match args.from {
        Some(dir) => dir,
        None => default_data_dir().context("no data directory: pass --from")?,
    };
    if !data_dir.join("store.redb").exists() {
        anyhow::bail!(
            "{} holds no embedded store (store.redb)",
            data_dir.display()
        );
    }
    let source = EmbeddedStore::open(&data_dir).with_context(|| {
        format!(
            "cannot open the store in {} (stop the control plane using it first)",
            data_dir.display()
        )
    })?;
    let settings = args.etcd.settings(&args.to)?;
    let prefix = settings.prefix.clone();
    let target = EtcdStore::connect(settings).await?;
    let migrated = migrate(&source, &target).await?;
    // An installation from before the store held the admin token: take the file's, so
    // the CLI and scripts keep working against the replicas.
    let token_file = data_dir.join(token::TOKEN_FILE);
    let mut token_copied = false;
    if target.get(token::STORE_KEY).await?.is_none() {
        if let Ok(text) = std::fs::read_to_string(&token_file) {
            target
                .put(
                    token::STORE_KEY,
                    text.trim().as_bytes().to_vec(),
                    Expect::Absent,
                )
                .await?;
            token_copied = true;
        }
    }
    println!(
        "migrated {} keys ({} resources) from {} to {} under {prefix}{}",
        migrated.keys,
        migrated.resources,
        data_dir.display(),
        args.to,
        if token_copied {
            ", with the admin token"
        } else {
            ""
        }
    );
    println!(
        "start the control planes with --store {} (and --ca-encryption-key to encrypt the CA's keys there)",
        args.to
    );
    Ok(())
}
