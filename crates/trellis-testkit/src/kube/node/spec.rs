//! What a container of an admitted Pod spec runs, as pure functions: the program and
//! its arguments (from `command`/`args`, or the image's entrypoint and arguments the
//! node's options give, since images have no files here), `$(VAR)` expansion as the
//! kubelet does it, and `fieldRef` values.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Why a container cannot be started as its spec says; the Pod reports it as the
/// container's waiting reason `CreateContainerConfigError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// What an image would run: its `ENTRYPOINT` and `CMD`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// The images and programs a node knows (see [`super::NodeOptions`]).
#[derive(Debug, Clone, Default)]
pub struct Executables {
    /// By image reference without its tag or digest (`ghcr.io/org/app`), or with it.
    pub images: HashMap<String, Image>,
    /// `command[0]` of a container → the executable to run instead.
    pub programs: HashMap<String, PathBuf>,
}

impl Executables {
    fn image(&self, reference: &str) -> Option<&Image> {
        self.images
            .get(reference)
            .or_else(|| self.images.get(repository(reference)))
    }

    /// The program and arguments of `container`, before `$(VAR)` expansion, as the
    /// container runtime combines a container's `command`/`args` with its image: a
    /// `command` replaces the entrypoint and the image's arguments, `args` alone
    /// replace only the arguments.
    pub fn command_line(&self, container: &Container) -> Result<Vec<String>, SpecError> {
        let image_ref = container.image.as_deref().unwrap_or("");
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone();
        let mut line = if command.is_empty() {
            let Some(image) = self.image(image_ref) else {
                return Err(SpecError(format!(
                    "container {:?} has no command and its image {image_ref:?} is not one \
                     the node knows (NodeOptions::image maps an image to the executable \
                     it runs)",
                    container.name
                )));
            };
            let mut line = image.entrypoint.clone();
            line.extend(args.unwrap_or_else(|| image.cmd.clone()));
            line
        } else {
            let mut line = command;
            line.extend(args.unwrap_or_default());
            line
        };
        if line.is_empty() {
            return Err(SpecError(format!(
                "container {:?}: neither its command nor its image {image_ref:?} names a \
                 program",
                container.name
            )));
        }
        if let Some(program) = self.programs.get(&line[0]) {
            line[0] = program.to_string_lossy().into_owned();
        }
        Ok(line)
    }
}

/// An image reference without its digest (`@sha256:…`) or tag (`:v1` after the last
/// `/`, so a registry's port stays).
fn repository(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].find(':') {
        Some(colon) => &reference[..name_start + colon],
        None => reference,
    }
}

/// Expands `$(NAME)` in `input` as Kubernetes does in `command`, `args` and env
/// values: a defined name is replaced by its value, an undefined one stays as
/// written, `$$` is a literal `$`, and any other `$` stays.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `fieldRef` of `pod` (the fields the downward API offers to env).
pub fn field_ref(pod: &Pod, path: &str) -> Result<String, SpecError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let keyed = |prefix: &str, map: Option<&std::collections::BTreeMap<String, String>>| {
        let key = path
            .strip_prefix(prefix)?
            .strip_suffix("']")?
            .strip_prefix("['")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status.and_then(|s| s.pod_ips.as_ref()).map(|ips| {
            ips.iter()
                .map(|ip| ip.ip.clone())
                .collect::<Vec<_>>()
                .join(",")
        }),
        _ => keyed("metadata.labels", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations", meta.annotations.as_ref()))
            .map(Some)
            .ok_or_else(|| {
                SpecError(format!(
                    "fieldRef {path:?} is not a field the node agent supports (metadata.name, \
                     metadata.namespace, metadata.uid, metadata.labels['KEY'], \
                     metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, \
                     status.podIP, status.podIPs, status.hostIP)"
                ))
            })?,
    };
    Ok(value.unwrap_or_default())
}

/// Expands every element of a command line with the container's environment.
pub fn expand_command(line: &[String], env: &[(String, String)]) -> Vec<String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    line.iter()
        .map(|arg| expand(arg, |name| vars.get(name).map(|v| v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let lookup = |name: &str| match name {
            "POD_IP" => Some("10.1.2.3".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        for (input, want) in [
            ("--ip=$(POD_IP)", "--ip=10.1.2.3"),
            ("$(POD_IP):$(POD_IP)", "10.1.2.3:10.1.2.3"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$$(POD_IP)", "$(POD_IP)"),
            ("cost $$5", "cost $5"),
            ("a$b", "a$b"),
            ("end$", "end$"),
            ("$(POD_IP", "$(POD_IP"),
            ("x$(EMPTY)y", "xy"),
            ("no vars", "no vars"),
        ] {
            assert_eq!(expand(input, lookup), want, "expanding {input:?}");
        }
    }

    #[test]
    fn image_references_match_without_tag_or_digest() {
        for (reference, want) in [
            ("trellis", "trellis"),
            ("trellis:0.1.0", "trellis"),
            ("ghcr.io/org/trellis:0.1.0", "ghcr.io/org/trellis"),
            ("localhost:5000/trellis", "localhost:5000/trellis"),
            ("localhost:5000/trellis:v1", "localhost:5000/trellis"),
            ("trellis@sha256:abcd", "trellis"),
        ] {
            assert_eq!(repository(reference), want, "{reference}");
        }
    }

    fn container(image: &str, command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Container {
            name: "app".to_string(),
            image: Some(image.to_string()),
            command: command.map(owned),
            args: args.map(owned),
            ..Container::default()
        }
    }

    #[test]
    fn command_lines_combine_the_container_and_its_image() {
        let mut executables = Executables::default();
        executables.images.insert(
            "trellis".to_string(),
            Image {
                entrypoint: vec!["/bin/trellis".to_string()],
                cmd: vec!["--help".to_string()],
            },
        );
        executables
            .programs
            .insert("trellis".to_string(), PathBuf::from("/build/trellis"));
        let cases: &[(Container, Result<&[&str], &str>)] = &[
            (
                container("trellis:1", None, None),
                Ok(&["/bin/trellis", "--help"]),
            ),
            (
                container("trellis:1", None, Some(&["proxy", "--kubernetes"])),
                Ok(&["/bin/trellis", "proxy", "--kubernetes"]),
            ),
            (
                container("busybox", Some(&["trellis", "run"]), Some(&["-v"])),
                Ok(&["/build/trellis", "run", "-v"]),
            ),
            (
                container("busybox", Some(&["python3", "-m", "http.server"]), None),
                Ok(&["python3", "-m", "http.server"]),
            ),
            (container("busybox", None, Some(&["x"])), Err("busybox")),
        ];
        for (container, want) in cases {
            let got = executables.command_line(container);
            match (got, want) {
                (Ok(line), Ok(want)) => assert_eq!(line, *want),
                (Err(err), Err(text)) => assert!(err.0.contains(text), "{err}"),
                (got, want) => panic!("{container:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn field_refs_read_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "serviceAccountName": "web",
                     "containers": []},
            "status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}]}
        }))
        .expect("a pod");
        for (path, want) in [
            ("metadata.name", "web-0"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "u-1"),
            ("spec.nodeName", "node-a"),
            ("spec.serviceAccountName", "web"),
            ("status.podIP", "10.1.2.3"),
            ("status.podIPs", "10.1.2.3"),
            ("status.hostIP", ""),
            ("metadata.labels['app']", "web"),
            ("metadata.annotations['none']", ""),
        ] {
            assert_eq!(field_ref(&pod, path).as_deref(), Ok(want), "{path}");
        }
        let err = field_ref(&pod, "spec.hostname").expect_err("unsupported");
        assert!(err.0.contains("spec.hostname"), "{err}");
    }
}
