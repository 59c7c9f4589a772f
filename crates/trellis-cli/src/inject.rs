//! `trellis inject -f FILE`: what the admission webhook does, offline, for manifests.
//!
//! Reads YAML documents from a file (or `-` for standard input), injects every Pod
//! and the Pod template of every Deployment, StatefulSet, DaemonSet, ReplicaSet, Job
//! and CronJob (and of the items of a `List`), and writes all the documents to
//! standard output, the others unchanged. The injection is the webhook's patch applied
//! to the document, so what the manifest says beyond it stays as written.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;
use trellis_kubernetes::inject::{self, Decision, InjectSettings};

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// The manifests: a YAML file of one or more documents, or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The image with the `trellis` binary, for the proxy and the capture container
    /// (default: the release image of this version).
    #[arg(long)]
    pub image: Option<String>,
    /// The control plane's gRPC URL the proxies connect to.
    #[arg(long, default_value = inject::DEFAULT_CONTROL_GRPC)]
    pub control_grpc: String,
    /// The control plane's namespace, whose Pods are never injected.
    #[arg(long, default_value = inject::DEFAULT_CONTROL_NAMESPACE)]
    pub control_namespace: String,
}

pub fn run(args: InjectArgs) -> anyhow::Result<()> {
    let input = read_input(&args.file)?;
    let mut settings = InjectSettings::new();
    if let Some(image) = args.image {
        settings.image = image;
    }
    settings.control_grpc = args.control_grpc;
    settings.control_namespace = args.control_namespace;
    let output = inject_manifests(&input, &settings)?;
    print!("{output}");
    Ok(())
}

fn read_input(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read standard input")?;
        Ok(input)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

/// The manifests in `input`, injected, as YAML documents.
pub fn inject_manifests(input: &str, settings: &InjectSettings) -> anyhow::Result<String> {
    let mut documents: Vec<Value> =
        serde_saphyr::from_multiple(input).context("the input is not YAML")?;
    documents.retain(|d| !d.is_null());
    for (i, document) in documents.iter_mut().enumerate() {
        require_kind(document)
            .and_then(|()| inject_object(document, settings))
            .with_context(|| format!("document {} ({})", i + 1, describe(document)))?;
    }
    serde_saphyr::to_string_multiple(&documents).context("cannot write YAML")
}

/// Checks that a document is an object with a kind: anything else is not a manifest.
fn require_kind(document: &Value) -> anyhow::Result<()> {
    if document.get("kind").and_then(Value::as_str).is_none() {
        bail!("not a Kubernetes object: it has no kind");
    }
    Ok(())
}

/// Injects the Pod or Pod template `object` holds, if any.
fn inject_object(object: &mut Value, settings: &InjectSettings) -> anyhow::Result<()> {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = describe(object);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let template = match kind.as_str() {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        "List" => {
            for item in object
                .get_mut("items")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                inject_object(item, settings)?;
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let Some(target) = object.pointer_mut(template) else {
        bail!("{kind} has no {template}");
    };
    let injection = inject::patch_for(target, namespace.as_deref(), settings)?;
    if let Decision::Skipped(reason) = &injection.decision {
        eprintln!("{name}: not injected: {reason}");
        return Ok(());
    }
    json_patch::patch(target, &injection.patch).context("cannot apply the injection")?;
    Ok(())
}

/// `Deployment/web` for messages.
fn describe(object: &Value) -> String {
    let field = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    format!("{}/{}", field("/kind"), field("/metadata/name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, targetPort: 8080}]}
";

    fn init_names(template: &Value) -> Vec<&str> {
        template["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["name"].as_str().expect("name"))
            .collect()
    }

    #[test]
    fn workloads_are_injected_and_other_documents_pass_through() {
        let out = inject_manifests(DEPLOYMENT, &InjectSettings::new()).expect("injects");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("YAML out");
        assert_eq!(docs.len(), 2);
        assert_eq!(
            init_names(&docs[0]["spec"]["template"]),
            ["trellis-init", "trellis-proxy"]
        );
        assert_eq!(docs[0]["spec"]["replicas"], 2);
        let input: Vec<Value> = serde_saphyr::from_multiple(DEPLOYMENT).expect("YAML in");
        assert_eq!(docs[1], input[1], "a Service is left as it is");
        // Injecting the output again changes nothing.
        let again = inject_manifests(&out, &InjectSettings::new()).expect("injects");
        assert_eq!(
            serde_saphyr::from_multiple::<Value>(&again).expect("YAML"),
            docs
        );
    }

    #[test]
    fn every_workload_kind_has_its_template_injected() {
        let pod_spec = "{containers: [{name: app, image: app}]}";
        let cases = [
            ("Pod", format!("spec: {pod_spec}"), ""),
            (
                "StatefulSet",
                format!("spec: {{template: {{spec: {pod_spec}}}}}"),
                "/spec/template",
            ),
            (
                "DaemonSet",
                format!("spec: {{template: {{spec: {pod_spec}}}}}"),
                "/spec/template",
            ),
            (
                "ReplicaSet",
                format!("spec: {{template: {{spec: {pod_spec}}}}}"),
                "/spec/template",
            ),
            (
                "Job",
                format!("spec: {{template: {{spec: {pod_spec}}}}}"),
                "/spec/template",
            ),
            (
                "CronJob",
                format!("spec: {{jobTemplate: {{spec: {{template: {{spec: {pod_spec}}}}}}}}}"),
                "/spec/jobTemplate/spec/template",
            ),
        ];
        for (kind, body, template) in cases {
            let input = format!("kind: {kind}\nmetadata: {{name: x}}\n{body}\n");
            let out = inject_manifests(&input, &InjectSettings::new()).expect(kind);
            let doc: Value = serde_saphyr::from_str(&out).expect("YAML");
            let target = doc.pointer(template).expect(kind);
            assert_eq!(
                init_names(target),
                ["trellis-init", "trellis-proxy"],
                "{kind}"
            );
        }
    }

    #[test]
    fn a_list_has_its_items_injected() {
        let input = "kind: List\nitems:\n- kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: app, image: app}]}\n";
        let out = inject_manifests(input, &InjectSettings::new()).expect("injects");
        let doc: Value = serde_saphyr::from_str(&out).expect("YAML");
        assert_eq!(
            init_names(&doc["items"][0]),
            ["trellis-init", "trellis-proxy"]
        );
    }

    #[test]
    fn bad_documents_are_named() {
        let cases = [
            ("a: [", "not YAML"),
            ("- just\n- a list\n", "document 1"),
            ("kind: Deployment\nmetadata: {name: web}\nspec: {}\n", "(Deployment/web): Deployment has no /spec/template"),
            (
                "kind: Pod\nmetadata: {name: web, annotations: {trellis.dev/proxy-cpu: lots}}\nspec: {containers: []}\n",
                "trellis.dev/proxy-cpu",
            ),
        ];
        for (input, says) in cases {
            let err = inject_manifests(input, &InjectSettings::new()).expect_err(input);
            assert!(format!("{err:#}").contains(says), "{input}: {err:#}");
        }
    }
}
