//! `trellis demo-app ROLE`: one of the bookshop's services as a process, the way
//! `trellis demo` runs each under `trellis run`. Listens on `--listen`, else on
//! `127.0.0.1:$PORT` as `trellis run` sets it; stops on SIGTERM or SIGINT, and when the
//! process that started it goes away, so an interrupted demo leaves nothing behind.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::{books, load, ratings, web};

/// How often a role checks that its parent process is still there.
const PARENT_CHECK: Duration = Duration::from_secs(1);

/// `trellis demo-app`: run one role of the sample bookshop.
#[derive(Debug, clap::Args)]
pub struct DemoApp {
    #[command(subcommand)]
    pub role: Role,
}

/// The bookshop's roles.
#[derive(Debug, clap::Subcommand)]
pub enum Role {
    /// The gRPC ratings service, answering as one version (`v2` gives 5 stars, others 4).
    // `--version` is the version it answers as, not the program's.
    #[command(disable_version_flag = true)]
    Ratings {
        /// The version this instance reports.
        #[arg(long, default_value = "v1")]
        version: String,
        #[command(flatten)]
        listen: Listen,
    },
    /// The books catalogue (HTTP/1.1 JSON), asking ratings for each book.
    Books {
        /// Where ratings is reached, `HOST:PORT`: the sidecar's local upstream port,
        /// or in transparent mode the Service's name (`ratings:8080`).
        #[arg(long)]
        ratings: String,
        #[command(flatten)]
        listen: Listen,
    },
    /// The shop's front end (HTML and JSON), built from books.
    Web {
        /// Where books is reached, `HOST:PORT`: the sidecar's local upstream port, or
        /// in transparent mode the Service's name (`books:8080`).
        #[arg(long)]
        books: String,
        #[command(flatten)]
        listen: Listen,
    },
    /// Light traffic to web; its counts on `GET /stats`.
    Loadgen {
        /// Base URL of web, e.g. `http://127.0.0.1:9000`.
        #[arg(long)]
        target: String,
        /// Requests a second, at most 10.
        #[arg(long, default_value_t = 5)]
        rps: u32,
        #[command(flatten)]
        listen: Listen,
    },
}

/// Where a role listens.
#[derive(Debug, Clone, clap::Args)]
pub struct Listen {
    /// Address to listen on. Default: `127.0.0.1:$PORT`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Port to listen on, on 127.0.0.1 (`trellis run` sets `PORT`).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
}

impl Listen {
    /// `--listen`, else `127.0.0.1:PORT`.
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        match (self.listen, self.port) {
            (Some(addr), _) => Ok(addr),
            (None, Some(port)) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            (None, None) => anyhow::bail!("no address to listen on: pass --listen or set PORT"),
        }
    }
}

type Serving = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Runs `app`'s role until it fails, a stop signal arrives, or the parent goes away.
pub async fn run_app(app: DemoApp) -> anyhow::Result<()> {
    let (name, listen) = match &app.role {
        Role::Ratings { listen, .. } => ("ratings", listen),
        Role::Books { listen, .. } => ("books", listen),
        Role::Web { listen, .. } => ("web", listen),
        Role::Loadgen { listen, .. } => ("loadgen", listen),
    };
    let addr = listen.addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("{name}: cannot listen on {addr}"))?;
    let serving: Serving = match app.role {
        Role::Ratings { version, .. } => {
            tracing::info!(%addr, %version, stars = ratings::stars_for(&version), "ratings listening (gRPC)");
            Box::pin(async move { ratings::serve_ratings_on(listener, &version).await })
        }
        Role::Books { ratings, .. } => {
            tracing::info!(%addr, %ratings, "books listening (HTTP)");
            Box::pin(books::serve_books_on(listener, ratings))
        }
        Role::Web { books, .. } => {
            tracing::info!(%addr, %books, "web listening (HTTP)");
            Box::pin(web::serve_web_on(listener, books))
        }
        Role::Loadgen { target, rps, .. } => {
            tracing::info!(%addr, "loadgen listening (HTTP, /stats)");
            Box::pin(async move { load::serve_loadgen_on(listener, &target, rps).await })
        }
    };
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        served = serving => served.with_context(|| format!("{name} stopped serving")),
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
        () = parent_gone() => {
            tracing::info!("the process that started this one is gone; stopping");
            Ok(())
        }
    }
}

/// Resolves once this process's parent has changed (it exited and the process was
/// re-parented), which a killed `trellis run` leaves behind.
async fn parent_gone() {
    let parent = rustix::process::getppid();
    let mut check = tokio::time::interval(PARENT_CHECK);
    loop {
        check.tick().await;
        if rustix::process::getppid() != parent {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_the_flag_else_on_port() {
        let listen = |listen: Option<&str>, port| Listen {
            listen: listen.map(|a| a.parse().expect("addr")),
            port,
        };
        let cases = [
            (listen(Some("0.0.0.0:81"), Some(9)), Some("0.0.0.0:81")),
            (listen(None, Some(9000)), Some("127.0.0.1:9000")),
            (listen(None, None), None),
        ];
        for (listen, want) in cases {
            let got = listen.addr().ok().map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{listen:?}");
        }
    }
}
