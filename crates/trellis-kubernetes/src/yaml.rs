//! Kubernetes objects as multi-document YAML, the form `kubectl apply -f -` reads and
//! the manifests under `deploy/kubernetes/` are kept in.

use serde::Serialize;

/// `objects` as YAML documents, each opened by `---`.
pub fn documents<T: Serialize>(objects: &[T]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
