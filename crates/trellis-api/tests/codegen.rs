//! The checked-in generated code matches the `.proto` files. Regenerate with
//! `TRELLIS_REGENERATE=1 cargo test -p trellis-api --test codegen` (needs `protoc`, Debian
//! package `protobuf-compiler`).

use std::path::{Path, PathBuf};

fn generate(out: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(out)
        .compile_protos(
            &[root.join("proto/trellis/mesh/v1/mesh.proto")],
            &[root.join("proto")],
        )
        .expect("protoc runs (install Debian's protobuf-compiler)");
}

#[test]
fn generated_code_is_up_to_date() {
    let checked_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/proto/trellis.mesh.v1.rs");
    let out = std::env::temp_dir().join(format!("trellis-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    generate(&out);
    let fresh = std::fs::read_to_string(out.join("trellis.mesh.v1.rs")).expect("generated file");
    let _ = std::fs::remove_dir_all(&out);
    if std::env::var_os("TRELLIS_REGENERATE").is_some() {
        std::fs::write(&checked_in, &fresh).expect("write generated code");
        return;
    }
    let current = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        current == fresh,
        "{} is out of date with the .proto files: run TRELLIS_REGENERATE=1 cargo test -p trellis-api --test codegen",
        checked_in.display()
    );
}
