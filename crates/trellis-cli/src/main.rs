//! The `trellis` command. Thin: it parses arguments, sets up logging and hands over to
//! the library that does the work.

mod check_kubernetes;
mod client;
mod control;
mod dashboard;
mod demo;
mod edges;
mod explain;
mod identity;
mod inject;
mod install;
mod iptables;
mod pod;
mod pod_sidecar;
mod prometheus;
mod proxy;
mod resources;
mod run;
mod sample;
mod sidecar;
mod stat;
mod store;
mod tap;
mod top;

use std::process::ExitCode;

/// jemalloc with its background thread, which returns freed pages to the system after a
/// burst (a flood of connections, a large configuration) whatever the process is doing;
/// see ARCHITECTURE.md, "Memory".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand, ValueEnum};

/// Trellis: a service mesh. Secure, reliable, observable calls between services.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about, propagate_version = true)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `trellis_proxy=debug` (env TRELLIS_LOG).
    #[arg(long, global = true, env = "TRELLIS_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the data-plane proxy from a static configuration file, or as a sidecar
    /// under the control plane.
    ///
    /// SIGHUP reloads the file (a bad file is refused and the running configuration
    /// kept); SIGTERM or SIGINT drains in-flight requests and exits.
    Proxy(proxy::ProxyArgs),
    /// Run a small sample HTTP service (HTTP/1.1 and HTTP/2), for demos and benchmarks.
    SampleServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Name the service answers with (`hello from NAME`, `x-served-by: NAME`).
        #[arg(long, default_value = "sample")]
        name: String,
        /// Speak a TCP protocol instead of HTTP: write this line on accept (as a MySQL
        /// server sends its handshake first), then echo what the client sends.
        #[arg(long)]
        greeting: Option<String>,
    },
    /// Run the control plane: resource API, proxy configuration push, workload registry.
    Control(control::ControlArgs),
    /// The control plane's store: move an embedded installation to etcd.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Run an application with its sidecar, registered with the control plane
    /// (universal mode): `trellis run --service books --port 9080 -- ./books`.
    Run(run::RunArgs),
    /// Create or update resources from YAML or JSON files.
    Apply(resources::ApplyArgs),
    /// List resources of a kind, or show one; `get proxies` shows the connected proxies.
    Get(resources::GetArgs),
    /// Delete one resource.
    Delete(resources::ObjectArgs),
    /// Show one resource as YAML, with its status conditions.
    Describe(resources::ObjectArgs),
    /// Say whether a request from one identity to a Service would be allowed, and by
    /// which authorization rule.
    Explain(explain::ExplainArgs),
    /// Bootstrap tokens for workload identities.
    #[command(subcommand)]
    Token(identity::TokenCommand),
    /// The mesh's certificate authority: show it, rotate its trust anchor.
    #[command(subcommand)]
    Ca(identity::CaCommand),
    /// Set up (or remove, or show) the iptables rules that send a host's or network
    /// namespace's TCP through its sidecar, as an init container does on Kubernetes.
    #[command(subcommand)]
    Iptables(iptables::IptablesCommand),
    /// Add the Trellis sidecar to the Pods and Pod templates of Kubernetes manifests, as
    /// the admission webhook does: `trellis inject -f app.yaml | kubectl apply -f -`.
    Inject(inject::InjectArgs),
    /// Golden signals over a window: success rate, requests per second and latency
    /// percentiles per service, workload or route, from the proxies' metrics.
    Stat(stat::StatArgs),
    /// Watch live requests to and from a service's proxies: method, path, status,
    /// latency, identities (never bodies). Needs the admin token.
    Tap(tap::TapArgs),
    /// The busiest paths of a service, live, from a tap on its proxies: count, success,
    /// average and longest latency per method and path. Needs the admin token.
    Top(top::TopArgs),
    /// Who calls a service and whom it calls: callers' identities, whether the calls
    /// are mTLS, success rate and rate over a window.
    Edges(edges::EdgesArgs),
    /// Print a Prometheus scrape configuration for the mesh: every proxy's /metrics,
    /// found through the control planes as workloads come and go.
    PrometheusConfig(prometheus::PrometheusArgs),
    /// Print the URL of the dashboard the control plane serves (services, topology,
    /// live tap, config and certificates); `--open` opens it in a browser.
    Dashboard(dashboard::DashboardArgs),
    /// Check what expires soon: trust anchors, the signing CA, workload certificates.
    /// Exit code 1 when anything does.
    Check(identity::CheckArgs),
    /// Start a control plane and a sample bookshop (web → books → ratings v1/v2), each
    /// service under `trellis run`, with light traffic; print what to try. Ctrl-C stops
    /// everything.
    Demo(demo::DemoArgs),
    /// Print the manifests that install Trellis on a platform (`install kubernetes`).
    #[command(subcommand)]
    Install(install::InstallCommand),
    /// Print what to delete to remove Trellis from a platform (`uninstall kubernetes`).
    #[command(subcommand)]
    Uninstall(install::UninstallCommand),
    /// Run one service of the demo's bookshop (used by `trellis demo`).
    #[command(hide = true)]
    DemoApp(trellis_demo::DemoApp),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Proxy(args) => proxy::run(args).await,
            Command::SampleServer {
                listen,
                name,
                greeting,
            } => sample::run(listen, &name, greeting).await,
            Command::Control(args) => control::run(args).await,
            Command::Store(command) => store::run(command).await,
            Command::PrometheusConfig(args) => prometheus::run(args).await,
            Command::Stat(args) => stat::run(args).await,
            Command::Tap(args) => tap::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Edges(args) => edges::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Apply(args) => resources::apply(args).await,
            Command::Get(args) => resources::get(args).await,
            Command::Delete(args) => resources::delete(args).await,
            Command::Describe(args) => resources::describe(args).await,
            Command::Explain(args) => explain::run(args).await,
            Command::Token(command) => identity::token(command).await,
            Command::Ca(command) => identity::ca(command).await,
            Command::Check(args) => identity::check(args).await,
            Command::Iptables(command) => iptables::run(command),
            Command::Inject(args) => inject::run(args),
            Command::Dashboard(args) => dashboard::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Install(command) => install::install(command),
            Command::Uninstall(command) => install::uninstall(command),
            Command::DemoApp(app) => trellis_demo::run_app(app).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One worker thread per core the process may run on. On a single core the
/// current-thread scheduler does the same work without cross-thread wake-ups.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
