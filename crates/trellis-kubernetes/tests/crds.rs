//! The checked-in `deploy/kubernetes/crds.yaml` is what the Rust types generate.
//! Regenerate it with `TRELLIS_REGENERATE=1 cargo test -p trellis-kubernetes --test crds`.

use std::path::PathBuf;

#[test]
fn checked_in_crds_are_up_to_date() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/crds.yaml");
    let fresh = trellis_kubernetes::crd::definitions_yaml().expect("the CRDs serialize");
    if std::env::var_os("TRELLIS_REGENERATE").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("deploy/kubernetes");
        std::fs::write(&path, &fresh).expect("write crds.yaml");
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is out of date with the types in crates/trellis-api: run \
         TRELLIS_REGENERATE=1 cargo test -p trellis-kubernetes --test crds",
        path.display()
    );
}
