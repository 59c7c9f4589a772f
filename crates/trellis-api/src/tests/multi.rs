use super::example;
use crate::{parse_documents, Kind};

#[test]
fn several_documents_parse_in_order_and_skip_empty_ones() {
    let text = format!(
        "---\n{}\n---\n# only a comment\n---\n{}---\n",
        example("meshconfig.yaml"),
        example("service.yaml")
    );
    let kinds: Vec<Kind> = parse_documents(&text)
        .expect("parses")
        .iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            Kind::MeshConfig,
            Kind::Service,
            Kind::Service,
            Kind::Service
        ]
    );
    assert_eq!(parse_documents("").expect("empty"), vec![]);
    assert_eq!(
        parse_documents("---\n---\n# nothing\n").expect("empty"),
        vec![]
    );
}

#[test]
fn errors_name_the_document() {
    let broken =
        example("backendpolicy.yaml").replace("connectTimeout: 500ms", "connectTimeout: soon");
    let text = format!("{}---\n{broken}", example("service.yaml"));
    let err = parse_documents(&text).expect_err("broken");
    assert_eq!(err.document, Some(4));
    assert!(
        err.to_string()
            .starts_with("document 4: spec.connectTimeout: invalid duration \"soon\""),
        "{err}"
    );

    // A single document carries no index.
    let err = parse_documents(&broken).expect_err("broken");
    assert_eq!(err.document, None);
    assert!(
        err.to_string().starts_with("spec.connectTimeout: "),
        "{err}"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let cases = [
        ("kind: [HTTPRoute\n", "invalid YAML: "),
        (
            "a: 1\na: 2\n",
            "invalid YAML: duplicate mapping key: a (line 2, column 1)",
        ),
        ("- [", "invalid YAML: "),
    ];
    for (text, want) in cases {
        let err = parse_documents(text).expect_err(text);
        assert_eq!(err.path, "", "{text:?}");
        assert!(err.to_string().starts_with(want), "{text:?}: {err}");
        assert!(err.to_string().contains("line "), "{text:?}: {err}");
    }
}

#[test]
fn json_and_lists_are_read() {
    let json = r#"{"apiVersion": "trellis.dev/v1alpha1", "kind": "MeshConfig",
                   "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "strict"}}}"#;
    assert_eq!(parse_documents(json).expect("JSON").len(), 1);

    let items: Vec<serde_json::Value> = parse_documents(example("service.yaml"))
        .expect("parses")
        .iter()
        .map(|r| serde_json::to_value(r).expect("serializes"))
        .collect();
    let list = serde_json::json!({ "items": items }).to_string();
    let read = parse_documents(&list).expect("list");
    assert_eq!(
        read,
        parse_documents(example("service.yaml")).expect("parses")
    );

    let mut broken = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    broken["items"][2]["spec"]["selector"] = serde_json::json!({});
    let err = parse_documents(&broken.to_string()).expect_err("empty selector");
    assert_eq!(err.path, "items[2].spec.selector");

    let err = parse_documents("items: 3").expect_err("not a list");
    assert_eq!(
        err.to_string(),
        "items: expected a list of resources, got a number"
    );
}

#[test]
fn non_resources_are_refused() {
    let cases = [
        ("- a\n- b\n", "", "expected a resource"),
        ("hello\n", "", "got a string"),
        (
            "kind: Service\n",
            "apiVersion",
            "missing field `apiVersion`",
        ),
        (
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\n",
            "metadata",
            "missing field `metadata`",
        ),
        (
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata: {}\nspec: {}\n",
            "metadata",
            "missing field `name`",
        ),
    ];
    for (text, path, message) in cases {
        let err = parse_documents(text).expect_err(text);
        assert_eq!(err.path, path, "{text:?}: {err}");
        assert!(err.message.contains(message), "{text:?}: {err}");
    }
}
