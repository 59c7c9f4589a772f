//! What the demo prints once the bookshop answers: where things are and what to try,
//! with commands that work as printed (the `trellis` they name is the one running).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::load::{LoadReport, NO_RATING};

/// Everything the banner names.
pub(crate) struct Banner<'a> {
    /// The `trellis` binary, when `PATH` would not find it: the banner then aliases it.
    pub program: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// `http://ADDR` of web through the mesh.
    pub entry: &'a str,
    pub dir: &'a Path,
    pub rps: u32,
}

impl Banner<'_> {
    pub(crate) fn render(&self) -> String {
        let Banner {
            program,
            http_addr,
            grpc_addr,
            entry,
            dir,
            rps,
        } = self;
        let dir = dir.display();
        let mut setup = format!(
            "  export TRELLIS_CONTROL=http://{http_addr}\n  export TRELLIS_TOKEN=$(cat {dir}/admin-token)\n"
        );
        if let Some(program) = program {
            let _ = writeln!(setup, "  alias trellis={}", program.display());
        }
        format!(
            "\n\
The Trellis demo is running: a bookshop of three services, each under `trellis run`
with its sidecar, every call between them through the mesh, over mutual TLS with
certificates from the control plane's CA.

  loadgen ─HTTP─► web ─HTTP─► books ─gRPC─► ratings-v1 (4 stars) · ratings-v2 (5 stars)

  control plane   http://{http_addr}   (HTTP API; proxies connect to {grpc_addr})
  dashboard       http://{http_addr}/dashboard/   (services, topology, live tap, certificates)
  bookshop        {entry}/   (web, through the mesh)
  data and logs   {dir}

A GRPCRoute sends every ratings call to ratings-v1. loadgen sends web {rps} requests a
second; what it sees is printed here every 10 s. Try, in another terminal:

{setup}
  # the five sidecars: config version, sync state, identity, certificate expiry
  trellis get proxies
  # the mesh CA: trust anchor and signer; then rotate the root under traffic
  trellis ca show
  trellis ca rotate --overlap 20s
  # the route for ratings
  trellis get grpcroutes
  # a book, its stars and the ratings version that answered
  curl {entry}/api/products/1
  # canary: 90% of the ratings calls to v1, 10% to v2 (see the traffic lines)
  trellis apply -f {dir}/canary.yaml
  # back to 100% v1
  trellis apply -f {dir}/mesh.yaml

Ctrl-C stops everything.
"
        )
    }
}

/// One line of what the load generator saw: `traffic (last 10 s): 50 ok, 0 failed;
/// ratings v1 45, v2 5`.
pub(crate) fn traffic_line(delta: &LoadReport, secs: u64) -> String {
    let mut line = format!(
        "traffic (last {secs} s): {} ok, {} failed",
        delta.ok, delta.failed
    );
    let versions: Vec<String> = delta
        .versions
        .iter()
        .filter(|(version, _)| *version != NO_RATING)
        .map(|(version, n)| format!("{version} {n}"))
        .collect();
    if !versions.is_empty() {
        let _ = write!(line, "; ratings {}", versions.join(", "));
    }
    if let Some(n) = delta.versions.get(NO_RATING) {
        let _ = write!(line, "; without a rating {n}");
    }
    line
}

/// `exe`, when `trellis` on `PATH` is not it; the banner's commands say `trellis`.
pub(crate) fn alias_for(exe: &Path) -> Option<PathBuf> {
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_path_buf());
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("trellis"))
            .find(|candidate| candidate.is_file())
            .and_then(|found| found.canonicalize().ok())
            .is_some_and(|found| found == exe)
    });
    (!on_path).then_some(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_lines_show_versions() {
        let report = |ok, failed, versions: &[(&str, u64)]| LoadReport {
            ok,
            failed,
            versions: versions.iter().map(|(v, n)| (v.to_string(), *n)).collect(),
        };
        let cases = [
            (report(0, 0, &[]), "traffic (last 10 s): 0 ok, 0 failed"),
            (
                report(50, 1, &[("v1", 45), ("v2", 5)]),
                "traffic (last 10 s): 50 ok, 1 failed; ratings v1 45, v2 5",
            ),
            (
                report(3, 0, &[("none", 2), ("v2", 1)]),
                "traffic (last 10 s): 3 ok, 0 failed; ratings v2 1; without a rating 2",
            ),
        ];
        for (delta, want) in cases {
            assert_eq!(traffic_line(&delta, 10), want);
        }
    }

    #[test]
    fn the_banner_names_everything_to_try() {
        let banner = Banner {
            program: Some(PathBuf::from("/opt/trellis")),
            http_addr: "127.0.0.1:7180".parse().expect("addr"),
            grpc_addr: "127.0.0.1:7100".parse().expect("addr"),
            entry: "http://127.0.0.1:9000",
            dir: Path::new("/tmp/d"),
            rps: 5,
        }
        .render();
        for want in [
            "control plane   http://127.0.0.1:7180",
            "dashboard       http://127.0.0.1:7180/dashboard/",
            "bookshop        http://127.0.0.1:9000/",
            "data and logs   /tmp/d",
            "trellis get proxies",
            "trellis ca rotate --overlap 20s",
            "trellis apply -f /tmp/d/canary.yaml",
            "curl http://127.0.0.1:9000/api/products/1",
            "TRELLIS_TOKEN=$(cat /tmp/d/admin-token)",
            "alias trellis=/opt/trellis",
        ] {
            assert!(banner.contains(want), "{want:?} missing from\n{banner}");
        }
    }
}
