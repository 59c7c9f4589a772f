//! `trellis prometheus-config`: a Prometheus scrape configuration for the mesh. The
//! proxies are found through the control planes' HTTP service discovery
//! (`/api/v1/prometheus/targets`), so Prometheus follows the mesh as workloads come and
//! go without being reconfigured.

use std::path::PathBuf;

use crate::client::{Client, ClientArgs};

#[derive(Debug, clap::Args)]
pub struct PrometheusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// How often Prometheus scrapes each proxy (a Prometheus duration: `15s`, `1m`).
    #[arg(long, default_value = "15s")]
    scrape_interval: String,
    /// How often Prometheus asks the control planes for the proxies.
    #[arg(long, default_value = "30s")]
    refresh_interval: String,
    /// A file holding the admin token, for a Prometheus on another host than the
    /// control plane. Default: the local control plane's token file, if there is one.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

pub async fn run(args: PrometheusArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    // Every replica knows only the proxies connected to it: list them all.
    let view = client.get("/api/v1/control-planes").await?;
    let mut urls: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["http"].as_str())
        .map(|http| format!("http://{http}"))
        .collect();
    if urls.is_empty() {
        urls.push(args.client.control.trim_end_matches('/').to_owned());
    }
    let token_file = args.token_file.or_else(|| {
        crate::control::default_data_dir()
            .map(|dir| dir.join("admin-token"))
            .filter(|file| file.exists())
    });
    print!(
        "{}",
        render(
            &urls,
            &args.scrape_interval,
            &args.refresh_interval,
            token_file.as_deref()
        )
    );
    Ok(())
}

/// The configuration, as YAML.
fn render(
    control_planes: &[String],
    scrape_interval: &str,
    refresh_interval: &str,
    token_file: Option<&std::path::Path>,
) -> String {
    let mut out = String::from(
        "# Prometheus scrape configuration for the Trellis mesh (trellis prometheus-config).\n\
         # Every proxy's admin server serves /metrics; the control planes list them.\n\
         scrape_configs:\n\
         \x20 - job_name: trellis-proxies\n",
    );
    out.push_str(&format!("    scrape_interval: {scrape_interval}\n"));
    out.push_str("    metrics_path: /metrics\n    http_sd_configs:\n");
    for url in control_planes {
        out.push_str(&format!(
            "      - url: {url}/api/v1/prometheus/targets\n        refresh_interval: {refresh_interval}\n"
        ));
        if let Some(file) = token_file {
            out.push_str(&format!(
                "        authorization:\n          credentials_file: {}\n",
                file.display()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_discovery_per_control_plane() {
        let urls = [
            "http://10.0.0.1:7180".to_owned(),
            "http://10.0.0.2:7180".to_owned(),
        ];
        let file = std::path::Path::new("/var/lib/trellis/admin-token");
        let yaml = render(&urls, "15s", "30s", Some(file));
        let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).expect("YAML");
        let job = &parsed["scrape_configs"][0];
        assert_eq!(job["job_name"], "trellis-proxies");
        assert_eq!(job["scrape_interval"], "15s");
        let sd = job["http_sd_configs"].as_array().expect("list");
        assert_eq!(sd.len(), 2);
        assert_eq!(
            sd[1]["url"],
            "http://10.0.0.2:7180/api/v1/prometheus/targets"
        );
        assert_eq!(
            sd[0]["authorization"]["credentials_file"],
            "/var/lib/trellis/admin-token"
        );
    }
}
