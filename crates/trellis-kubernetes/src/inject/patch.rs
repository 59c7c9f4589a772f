//! The JSONPatch (RFC 6902) from a Pod to its injected self.
//!
//! Injection only adds: containers at the front of `initContainers`, a volume at the
//! end of `volumes`, an annotation. The patch says exactly that (an `add` per new
//! member or array element) instead of replacing whole arrays, so that it changes
//! nothing else of the object it is applied to: the API server's object may carry
//! fields the Kubernetes types of this crate do not know, and they must survive.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// The operations that turn `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Patch {
    let mut ops = Vec::new();
    walk(&mut PointerBuf::new(), before, after, &mut ops);
    Patch(ops)
}

fn walk(path: &mut PointerBuf, before: &Value, after: &Value, ops: &mut Vec<PatchOperation>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                ops.push(PatchOperation::Remove(RemoveOperation {
                    path: path.with_trailing_token(key),
                }));
            }
            for (key, value) in new {
                match old.get(key) {
                    None => ops.push(add(path.with_trailing_token(key), value)),
                    Some(previous) => {
                        path.push_back(key);
                        walk(path, previous, value, ops);
                        path.pop_back();
                    }
                }
            }
        }
        (Value::Array(old), Value::Array(new)) if old.len() == new.len() => {
            for (i, (previous, value)) in old.iter().zip(new).enumerate() {
                path.push_back(i);
                walk(path, previous, value, ops);
                path.pop_back();
            }
        }
        (Value::Array(old), Value::Array(new)) => match insertions(old, new) {
            Some(indices) => {
                for i in indices {
                    ops.push(add(path.with_trailing_token(i), &new[i]));
                }
            }
            None => ops.push(replace(path.clone(), after)),
        },
        _ if before == after => {}
        _ => ops.push(replace(path.clone(), after)),
    }
}

/// The indices in `new` of its elements that are not `old`'s, when `new` is `old`
/// with elements inserted (in increasing order, each `add` lands where `new` has it).
fn insertions(old: &[Value], new: &[Value]) -> Option<Vec<usize>> {
    let mut remaining = old.iter().peekable();
    let mut added = Vec::new();
    for (i, value) in new.iter().enumerate() {
        if remaining.peek() == Some(&value) {
            remaining.next();
        } else {
            added.push(i);
        }
    }
    remaining.peek().is_none().then_some(added)
}

fn add(path: PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path,
        value: value.clone(),
    })
}

fn replace(path: PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path,
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Applies `diff(before, after)` to `before` and checks it gives `after`.
    fn round_trip(before: Value, after: Value) -> Patch {
        let patch = diff(&before, &after);
        let mut applied = before;
        json_patch::patch(&mut applied, &patch).expect("the patch applies");
        assert_eq!(applied, after);
        patch
    }

    fn ops(patch: &Patch) -> Value {
        serde_json::to_value(patch).expect("serializes")
    }

    #[test]
    fn insertions_are_adds_at_their_index() {
        let patch = round_trip(
            json!({"spec": {"initContainers": [{"name": "migrate"}], "containers": [{"name": "app"}]}}),
            json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}, {"name": "migrate"}], "containers": [{"name": "app"}]}}),
        );
        assert_eq!(
            ops(&patch),
            json!([
                {"op": "add", "path": "/spec/initContainers/0", "value": {"name": "a"}},
                {"op": "add", "path": "/spec/initContainers/1", "value": {"name": "b"}},
            ])
        );
    }

    #[test]
    fn new_members_are_added_whole_and_keys_escaped() {
        let patch = round_trip(
            json!({"metadata": {"annotations": {"a/b": "1"}}}),
            json!({"metadata": {"annotations": {"a/b": "1", "trellis.dev/injected": "0.1.0"}, "labels": {"x": "y"}}}),
        );
        assert_eq!(
            ops(&patch),
            json!([
                {"op": "add", "path": "/metadata/annotations/trellis.dev~1injected", "value": "0.1.0"},
                {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
            ])
        );
    }

    #[test]
    fn other_changes_are_replaces_and_removes() {
        round_trip(
            json!({"a": [1, 2, 3], "b": 1}),
            json!({"a": [3, 1], "c": 2}),
        );
        round_trip(json!({"a": [1, 2]}), json!({"a": [1, 5]}));
        round_trip(json!({"a": {"b": 1}}), json!({"a": "flat"}));
        assert!(diff(
            &json!({"same": [1, {"x": 2}]}),
            &json!({"same": [1, {"x": 2}]})
        )
        .0
        .is_empty());
    }
}
