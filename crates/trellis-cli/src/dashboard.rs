//! `trellis dashboard [--control URL] [--open]`: where the control plane serves its
//! dashboard, after checking that it answers; `--open` hands the URL to `xdg-open`.

use anyhow::Context;

use crate::client::{Client, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Open the dashboard in the desktop's browser (`xdg-open`).
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// The dashboard's URL on the control plane at `control` (the HTTP API's URL).
pub fn url(control: &str) -> String {
    format!("{}/dashboard/", control.trim_end_matches('/'))
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    Client::new(&args.client)?
        .get("/api/v1/health")
        .await
        .context("the dashboard is served by the control plane")?;
    let url = url(&args.client.control);
    println!("{url}");
    if args.open {
        let status = tokio::process::Command::new("xdg-open")
            .arg(&url)
            .status()
            .await
            .context("cannot run xdg-open; open the URL above in a browser")?;
        anyhow::ensure!(
            status.success(),
            "xdg-open failed ({status}); open the URL above in a browser"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_url_is_under_the_api() {
        assert_eq!(
            super::url("http://127.0.0.1:7180/"),
            "http://127.0.0.1:7180/dashboard/"
        );
        assert_eq!(super::url("http://cp:7180"), "http://cp:7180/dashboard/");
    }
}
