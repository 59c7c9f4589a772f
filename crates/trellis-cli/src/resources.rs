//! `trellis apply`, `get`, `delete` and `describe`: managing resources through the
//! control plane's HTTP API.
//!
//! `apply` validates every file locally first, so an error names the file, the document
//! and the field, and nothing is sent unless everything is valid; the control plane
//! validates again. `get` prints a table by default, or `{"items": [...]}` as JSON or
//! YAML. Lists cover every namespace unless `-n` names one; a NAME is looked up in `-n`,
//! else `default`.

mod protection;
pub(crate) mod table;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use trellis_api::meta::DEFAULT_NAMESPACE;
use trellis_api::{parse_documents, Kind, Resource};

use crate::client::{segment, Client, ClientArgs, ClientError};

/// Arguments of `trellis apply`.
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// A YAML or JSON file, a directory (its *.yaml, *.yml and *.json files, in name
    /// order), or `-` for standard input. May be given more than once.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `trellis get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// What to show: a kind (httproutes, grpcroutes, tcproutes, services or svc,
    /// workloads or wl, backendpolicies or bp, authorizationpolicies or authz,
    /// meshconfigs) or `proxies`.
    kind: String,
    /// One object by name. Default: all of the kind.
    name: Option<String>,
    /// Namespace. Default: every namespace for a list, `default` for a NAME.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `trellis delete` and `trellis describe`: one object.
#[derive(Debug, clap::Args)]
pub struct ObjectArgs {
    /// The kind (httproute, svc, wl, bp, authz, meshconfig, …).
    kind: String,
    /// The object's name.
    name: String,
    /// Namespace. Default: `default`.
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// What `get` and `describe` can show: a resource kind, or the connected proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Kind(Kind),
    Proxies,
}

/// `trellis apply -f FILE|DIR|-`
pub async fn apply(args: ApplyArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let mut resources: Vec<Resource> = Vec::new();
    let mut names = Vec::new();
    for (name, text) in read_inputs(&args.files)? {
        let parsed = parse_documents(&text).map_err(|e| anyhow!("{name}: {e}"))?;
        resources.extend(parsed);
        names.push(name);
    }
    if resources.is_empty() {
        bail!("no resources in {}", names.join(", "));
    }
    let body = serde_json::to_string(&json!({ "items": resources }))?;
    let (answer, failure) = match client.post("/api/v1/apply", body).await {
        Ok(answer) => (answer["results"].clone(), None),
        Err(ClientError::Api { body, message, .. }) => (body["applied"].clone(), Some(message)),
        Err(e) => return Err(e.into()),
    };
    let mut out = String::new();
    for result in answer.as_array().into_iter().flatten() {
        let action = result["action"].as_str().unwrap_or("applied");
        out.push_str(&format!("{} {action}\n", qualified(result)));
    }
    emit(&out)?;
    match failure {
        Some(message) => Err(anyhow!(message)),
        None => Ok(()),
    }
}

/// `trellis get KIND [NAME] [-n NS] [-o table|json|yaml]`
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let target = target(&args.kind)?;
    let namespace = args.namespace.as_deref();
    let items = match (target, &args.name) {
        (Target::Proxies, name) => proxies(&client, name.as_deref(), namespace).await?,
        (Target::Kind(kind), Some(name)) => {
            vec![client.get(&object_path(kind, namespace, name)).await?]
        }
        (Target::Kind(kind), None) => {
            let mut path = format!("/api/v1/resources/{}", kind.plural());
            if let Some(ns) = namespace {
                path.push_str(&format!("?namespace={}", segment(ns)));
            }
            let list = client.get(&path).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&json!({ "items": items }))? + "\n",
        Output::Yaml => serde_saphyr::to_string(&json!({ "items": items }))?,
        Output::Table if items.is_empty() => {
            let where_ = namespace.map_or(String::new(), |ns| format!(" in namespace {ns}"));
            eprintln!("No {} found{where_}.", target.plural());
            return Ok(());
        }
        Output::Table => table::render(target, &items),
    };
    emit(&text)
}

/// `trellis delete KIND NAME [-n NS]`
pub async fn delete(args: ObjectArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let Target::Kind(kind) = target(&args.kind)? else {
        bail!("proxies cannot be deleted: a proxy leaves when its workload stops");
    };
    let path = object_path(kind, args.namespace.as_deref(), &args.name);
    let answer = client.delete(&path).await?;
    emit(&format!("{} deleted\n", qualified(&answer["deleted"])))
}

/// `trellis describe KIND NAME [-n NS]`
pub async fn describe(args: ObjectArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let namespace = args.namespace.as_deref();
    let mut object = match target(&args.kind)? {
        Target::Proxies => {
            let found = proxies(&client, Some(&args.name), namespace).await?;
            found.into_iter().next().unwrap_or_default()
        }
        Target::Kind(kind) => {
            let path = object_path(kind, namespace, &args.name);
            let mut object = client.get(&path).await?;
            // Which proxies hold it, and in what compiled form.
            let holders = client.get(&format!("{path}/proxies")).await?;
            if let Some(o) = object.as_object_mut() {
                o.insert("proxies".into(), holders["items"].clone());
            }
            object
        }
    };
    let status = object.as_object_mut().and_then(|o| o.remove("status"));
    let proxies = object.as_object_mut().and_then(|o| o.remove("proxies"));
    let mut text = serde_saphyr::to_string(&object)?;
    if let Some(Value::Array(conditions)) = status.and_then(|s| s.get("conditions").cloned()) {
        text.push_str(&table::conditions(&conditions));
    }
    if let Target::Kind(kind @ (Kind::Service | Kind::BackendPolicy)) = target(&args.kind)? {
        text.push_str(&protection_of(&client, kind, &object).await?);
    }
    if let Some(Value::Array(proxies)) = proxies {
        text.push_str(&proxies_section(&proxies)?);
    }
    emit(&text)
}

/// The protection in force for a Service, or for the Service a BackendPolicy targets
/// (the policy that applies may be an older one).
async fn protection_of(client: &Client, kind: Kind, object: &Value) -> anyhow::Result<String> {
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(DEFAULT_NAMESPACE);
    let service = match kind {
        Kind::BackendPolicy => &object["spec"]["targetRef"]["name"],
        _ => &object["metadata"]["name"],
    };
    let path = format!(
        "/api/v1/resources/{}?namespace={}",
        Kind::BackendPolicy.plural(),
        segment(namespace)
    );
    let list = client.get(&path).await?;
    let policies = list["items"].as_array().cloned().unwrap_or_default();
    let policy = protection::policy_for(&policies, service.as_str().unwrap_or_default());
    protection::section(policy)
}

/// The proxies holding a resource, for `describe`: one header line each, then the
/// pieces of its configuration that came from the resource, as YAML.
fn proxies_section(proxies: &[Value]) -> anyhow::Result<String> {
    if proxies.is_empty() {
        return Ok("\nProxies: none holds it\n".to_string());
    }
    let mut text = String::from("\nProxies:\n");
    for p in proxies {
        let serving = if p["serving"] == true {
            "serving it"
        } else {
            "serving an older version"
        };
        text.push_str(&format!(
            "  {}/{} ({}): {}, acked version {}, {serving}\n",
            p["namespace"].as_str().unwrap_or_default(),
            p["workload"].as_str().unwrap_or_default(),
            p["service"].as_str().unwrap_or_default(),
            p["state"].as_str().unwrap_or_default(),
            p["ackedVersion"],
        ));
        let compiled = serde_saphyr::to_string(&p["compiled"])?;
        for line in compiled.lines() {
            text.push_str(&format!("    {line}\n"));
        }
    }
    Ok(text)
}

/// The connected proxies, optionally one workload or one namespace.
async fn proxies(
    client: &Client,
    workload: Option<&str>,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let list = client.get("/api/v1/proxies").await?;
    let items: Vec<Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| workload.is_none_or(|w| p["workload"] == w))
        .filter(|p| namespace.is_none_or(|ns| p["namespace"] == ns))
        .cloned()
        .collect();
    if let (Some(workload), true) = (workload, items.is_empty()) {
        bail!("no proxy for workload {workload} is connected to the control plane");
    }
    Ok(items)
}

fn target(word: &str) -> anyhow::Result<Target> {
    if ["proxies", "proxy", "px"].contains(&word.to_ascii_lowercase().as_str()) {
        return Ok(Target::Proxies);
    }
    Kind::from_cli(word).map(Target::Kind).ok_or_else(|| {
        let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        anyhow!(
            "unknown kind {word:?}: expected one of {}, or proxies (short names: svc, wl, bp, authz)",
            kinds.join(", ")
        )
    })
}

/// `/api/v1/resources/{plural}/{namespace}/{name}`, with `-` as the namespace of
/// cluster-wide kinds and `default` when none is given.
fn object_path(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    let namespace = match (kind.is_namespaced(), namespace) {
        (false, _) => "-",
        (true, Some(ns)) => ns,
        (true, None) => DEFAULT_NAMESPACE,
    };
    format!(
        "/api/v1/resources/{}/{}/{}",
        kind.plural(),
        segment(namespace),
        segment(name)
    )
}

/// `httproute.gateway.networking.k8s.io/ratings` for an object or an apply result.
fn qualified(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("object");
    let name = object["name"]
        .as_str()
        .or_else(|| object["metadata"]["name"].as_str())
        .unwrap_or("?");
    match Kind::from_name(kind) {
        Some(k) => format!("{}.{}/{name}", kind.to_ascii_lowercase(), k.group()),
        None => format!("{}/{name}", kind.to_ascii_lowercase()),
    }
}

/// Every input named by `-f`, as (name for messages, text).
fn read_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut inputs = Vec::new();
    for path in files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            inputs.push(("stdin".to_string(), text));
        } else if path.is_dir() {
            let found = manifests_in(path)?;
            if found.is_empty() {
                bail!("{} holds no .yaml, .yml or .json file", path.display());
            }
            for file in found {
                inputs.push((file.display().to_string(), read(&file)?));
            }
        } else {
            inputs.push((path.display().to_string(), read(path)?));
        }
    }
    Ok(inputs)
}

/// The *.yaml, *.yml and *.json files directly in `dir`, sorted by name.
fn manifests_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", dir.display()))?
            .path();
        let manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ["yaml", "yml", "json"].contains(&e));
        if manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Prints `items` as `{"items": [...]}` JSON or YAML, or as the table `table` makes.
pub(crate) fn emit_items(
    items: &[Value],
    output: Output,
    table: impl Fn(&[Value]) -> String,
) -> anyhow::Result<()> {
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&json!({ "items": items }))? + "\n",
        Output::Yaml => serde_saphyr::to_string(&json!({ "items": items }))?,
        Output::Table => table(items),
    };
    emit(&text)
}

/// Writes to standard output; a closed pipe (`trellis get … | head`) is not an error.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow!("cannot write to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

impl Target {
    fn plural(self) -> &'static str {
        match self {
            Target::Kind(kind) => kind.plural(),
            Target::Proxies => "proxies",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_paths() {
        let cases = [
            ("svc", None, "web", "/api/v1/resources/services/default/web"),
            (
                "HTTPRoute",
                Some("shop"),
                "r",
                "/api/v1/resources/httproutes/shop/r",
            ),
            (
                "meshconfig",
                Some("shop"),
                "default",
                "/api/v1/resources/meshconfigs/-/default",
            ),
        ];
        for (word, ns, name, want) in cases {
            let Ok(Target::Kind(kind)) = target(word) else {
                panic!("{word} is a kind");
            };
            assert_eq!(object_path(kind, ns, name), want);
        }
        assert_eq!(target("Proxies").expect("proxies"), Target::Proxies);
        let e = target("pods").expect_err("unknown").to_string();
        assert!(e.contains("expected one of services, workloads"), "{e}");
    }

    #[test]
    fn qualified_names() {
        let cases = [
            (
                json!({"kind": "HTTPRoute", "name": "r"}),
                "httproute.gateway.networking.k8s.io/r",
            ),
            (
                json!({"kind": "Service", "metadata": {"name": "web"}}),
                "service.trellis.dev/web",
            ),
        ];
        for (object, want) in cases {
            assert_eq!(qualified(&object), want);
        }
    }
}
