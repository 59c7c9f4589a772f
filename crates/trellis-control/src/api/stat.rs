//! `GET /api/v1/stat?by=service|workload|route[&name=N][&window=1m]`: the golden signals
//! of `trellis stat`; `GET /api/v1/edges?service=S[&namespace=N][&window=1m]`: who calls
//! whom, for `trellis edges`. Each control plane scrapes only the proxies connected to it, so
//! the one asked adds the others' rows (asked with `local=true`) to its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use trellis_api::duration::Duration as ApiDuration;

use super::error::ApiError;
use super::ApiState;
use crate::telemetry::{self, By, EdgeRow, StatRow};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatQuery {
    by: By,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    window: Option<String>,
    /// Only this control plane's proxies (what peers ask each other).
    #[serde(default)]
    local: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatAnswer {
    by: By,
    window_seconds: f64,
    items: Vec<StatRow>,
}

/// The default window.
const WINDOW: Duration = Duration::from_secs(60);

pub(super) async fn stat(
    State(api): State<Arc<ApiState>>,
    Query(query): Query<StatQuery>,
) -> Result<Json<StatAnswer>, ApiError> {
    let window = parse_window(query.window.as_deref())?;
    let Some(telemetry) = &api.telemetry else {
        return Err(ApiError::BadRequest(
            "this control plane does not collect metrics".into(),
        ));
    };
    telemetry.refresh().await;
    let mut rows: BTreeMap<(String, String), StatRow> = telemetry
        .stat(query.by, query.name.as_deref(), window)
        .into_iter()
        .map(|row| ((row.namespace.clone(), row.name.clone()), row))
        .collect();
    if !query.local {
        for peer in peers(&api) {
            let mut path = format!(
                "/api/v1/stat?local=true&by={}&window={}s",
                by_word(query.by),
                window.as_secs()
            );
            if let Some(name) = &query.name {
                path.push_str(&format!("&name={}", encode(name)));
            }
            let answer = telemetry::get(&peer, &path, Some(&api.admin_token)).await;
            let Some(answer) = answer
                .ok()
                .and_then(|text| serde_json::from_str::<StatAnswer>(&text).ok())
            else {
                tracing::warn!(%peer, "cannot read another control plane's stat");
                continue;
            };
            for row in answer.items {
                let key = (row.namespace.clone(), row.name.clone());
                match rows.get_mut(&key) {
                    Some(mine) => mine.merge(&row),
                    None => {
                        rows.insert(key, row);
                    }
                }
            }
        }
    }
    Ok(Json(StatAnswer {
        by: query.by,
        window_seconds: window.as_secs_f64(),
        items: rows.into_values().map(StatRow::derive).collect(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EdgesQuery {
    /// Only the edges into or out of this service; every edge when absent.
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    window: Option<String>,
    #[serde(default)]
    local: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EdgesAnswer {
    window_seconds: f64,
    items: Vec<EdgeRow>,
}

pub(super) async fn edges(
    State(api): State<Arc<ApiState>>,
    Query(query): Query<EdgesQuery>,
) -> Result<Json<EdgesAnswer>, ApiError> {
    let window = parse_window(query.window.as_deref())?;
    let Some(telemetry) = &api.telemetry else {
        return Err(ApiError::BadRequest(
            "this control plane does not collect metrics".into(),
        ));
    };
    let namespace = query.namespace.clone().unwrap_or_else(|| "default".into());
    telemetry.refresh().await;
    let mut rows: BTreeMap<(String, String, String, bool), EdgeRow> = BTreeMap::new();
    let mut add = |row: EdgeRow| {
        if let Some(service) = &query.service {
            if !row.touches(service, &namespace) {
                return;
            }
        }
        let key = (
            row.source.clone(),
            row.namespace.clone(),
            row.destination.clone(),
            row.mtls,
        );
        match rows.get_mut(&key) {
            Some(mine) => mine.merge(&row),
            None => {
                rows.insert(key, row);
            }
        }
    };
    telemetry.edges(window).into_iter().for_each(&mut add);
    if !query.local {
        let mut path = format!(
            "/api/v1/edges?local=true&namespace={}&window={}s",
            encode(&namespace),
            window.as_secs()
        );
        if let Some(service) = &query.service {
            path.push_str(&format!("&service={}", encode(service)));
        }
        for peer in peers(&api) {
            let answer = telemetry::get(&peer, &path, Some(&api.admin_token)).await;
            match answer
                .ok()
                .and_then(|t| serde_json::from_str::<EdgesAnswer>(&t).ok())
            {
                Some(answer) => answer.items.into_iter().for_each(&mut add),
                None => tracing::warn!(%peer, "cannot read another control plane's edges"),
            }
        }
    }
    Ok(Json(EdgesAnswer {
        window_seconds: window.as_secs_f64(),
        items: rows.into_values().map(EdgeRow::derive).collect(),
    }))
}

fn parse_window(text: Option<&str>) -> Result<Duration, ApiError> {
    match text {
        Some(text) => Ok(text
            .parse::<ApiDuration>()
            .map_err(|e| ApiError::BadRequest(format!("window: {e}")))?
            .get()),
        None => Ok(WINDOW),
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The HTTP addresses of the other control planes on the store.
pub(super) fn peers(api: &ApiState) -> Vec<String> {
    let Some(membership) = &api.membership else {
        return Vec::new();
    };
    let view = membership.view();
    view.members
        .into_iter()
        .filter(|m| m.instance != view.this)
        .map(|m| m.http)
        .collect()
}

fn by_word(by: By) -> &'static str {
    match by {
        By::Service => "service",
        By::Workload => "workload",
        By::Route => "route",
    }
}
