//! Reading resources from text: one or more YAML documents separated by `---`, or JSON
//! (which is YAML). A document may also be a list (`{kind: List, items: [...]}` or the
//! `{"items": [...]}` that `trellis get -o json` prints), so output can be applied back.

use serde_json::Value;

use crate::error::ValidationError;
use crate::resource::{describe, Resource};

/// Parses and validates every resource in `text`.
///
/// Documents are separated by `---`; empty documents are skipped. Errors name the field
/// path, and when the input holds more than one document they also name the document,
/// counting non-empty documents from 1 (`document 2: spec.rules[0]...`). YAML syntax
/// errors give a line and column instead of a path.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, ValidationError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| ValidationError::new("", parser_message(&e.to_string())))?;
    let several = documents.len() > 1;
    let mut resources = Vec::with_capacity(documents.len());
    for (i, document) in documents.into_iter().enumerate() {
        let locate = |e: ValidationError| if several { e.in_document(i + 1) } else { e };
        read_document(document, &mut resources).map_err(locate)?;
    }
    Ok(resources)
}

/// Reads one document, a resource or a list of them, into `out`.
fn read_document(document: Value, out: &mut Vec<Resource>) -> Result<(), ValidationError> {
    let Some(items) = list_items(&document) else {
        let resource = Resource::from_value(document)?;
        resource.validate()?;
        out.push(resource);
        return Ok(());
    };
    let items = items?;
    for (j, item) in items.iter().enumerate() {
        let at = format!("items[{j}]");
        let resource = Resource::from_value(item.clone()).map_err(|e| e.under(&at))?;
        resource.validate().map_err(|e| e.under(&at))?;
        out.push(resource);
    }
    Ok(())
}

/// The items of a list document: a mapping with `items` and no `spec`, whose `kind`, if
/// any, is `List`. `None` for anything else.
fn list_items(document: &Value) -> Option<Result<&Vec<Value>, ValidationError>> {
    let map = document.as_object()?;
    let items = map.get("items")?;
    if map.contains_key("spec") || map.get("kind").is_some_and(|k| k != "List") {
        return None;
    }
    if let Some(key) = map
        .keys()
        .find(|k| !["apiVersion", "kind", "items", "metadata"].contains(&k.as_str()))
    {
        return Some(Err(ValidationError::new(
            key.clone(),
            format!("unknown field `{key}` in a list, expected `items`"),
        )));
    }
    Some(match items {
        Value::Array(items) => Ok(items),
        other => Err(ValidationError::new(
            "items",
            format!("expected a list of resources, got {}", describe(other)),
        )),
    })
}

/// Turns the YAML parser's `what at line 6, column 18` into
/// `invalid YAML: what (line 6, column 18)`, keeping only the first line.
fn parser_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    // Only a plain `N, column M` location is rewritten; anything richer is kept whole.
    let located = first.rsplit_once(" at line ").filter(|(_, location)| {
        location
            .split_once(", column ")
            .is_some_and(|(l, c)| is_number(l) && is_number(c))
    });
    let (what, location) = match located {
        Some((what, location)) => (what, Some(location)),
        None => (first, None),
    };
    // Drop advice meant for programs embedding the parser.
    let what = what
        .split_once(", set DuplicateKeyPolicy")
        .map_or(what, |(what, _)| what);
    match location {
        Some(location) => format!("invalid YAML: {what} (line {location})"),
        None => format!("invalid YAML: {what}"),
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}
