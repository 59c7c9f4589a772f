//! The one error every parse and validation step returns: the path of the field at
//! fault, what is wrong with it, and for multi-document input which document it is in.

use std::fmt;

/// A resource that cannot be accepted, with the path of the field at fault
/// (`spec.rules[0].backendRefs[1].weight`) and a message that says what was found and
/// what would be accepted.
///
/// Displays as `path: message`, prefixed with `document N: ` when the input held
/// several documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    /// Position of the document in a multi-document input, counting non-empty
    /// documents from 1. `None` for a single resource.
    pub document: Option<usize>,
    /// Field path in the document's own spelling (`spec.parentRefs[0].name`). Empty when
    /// the error is about the input as a whole, such as a YAML syntax error.
    pub path: String,
    /// What is wrong, naming the value and what would be accepted.
    pub message: String,
}

impl ValidationError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            document: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error, located in document `index` (counting from 1).
    pub fn in_document(mut self, index: usize) -> Self {
        self.document = Some(index);
        self
    }

    /// The same error with `prefix` put in front of its path (`spec` + `rules[0]` →
    /// `spec.rules[0]`).
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.path = join(prefix, &self.path);
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.document {
            write!(f, "document {index}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Joins two field paths: `spec` + `rules[0]` is `spec.rules[0]`, `spec` + `[0]` is
/// `spec[0]`, and an empty side leaves the other unchanged.
pub(crate) fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => prefix.to_string(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Result of a validation step.
pub(crate) type Checked = Result<(), ValidationError>;

/// Deserializes `value` as `T`, reporting a failure at the full path of the field at
/// fault under `prefix`.
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(
    prefix: &str,
    value: serde_json::Value,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        ValidationError::new(join(prefix, &path), message)
    })
}
