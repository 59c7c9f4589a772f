//! The Gateway API's tagged filter shape as written in documents: a `type` and one
//! optional field per filter type. Reading checks that exactly the field named by
//! `type` is set; the error lands on the filter's path.

use serde::{Deserialize, Serialize};

use super::{
    GRPCRouteFilter, HTTPHeaderFilter, HTTPPathModifier, HTTPRequestMirrorFilter,
    HTTPRequestRedirectFilter, HTTPRouteFilter, HTTPURLRewriteFilter,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum HTTPFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    RequestMirror,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawHTTPRouteFilter {
    #[serde(rename = "type")]
    type_: HTTPFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_redirect: Option<HTTPRequestRedirectFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url_rewrite: Option<HTTPURLRewriteFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_mirror: Option<HTTPRequestMirrorFilter>,
}

/// The field that must hold a filter's settings, and the fields that were set.
fn one_field(type_: &str, field: &str, set: &[(&str, bool)]) -> Result<(), String> {
    if let Some((other, _)) = set.iter().find(|(name, on)| *on && *name != field) {
        return Err(format!(
            "{other} is set but type is {type_}; set only {field}"
        ));
    }
    if !set.iter().any(|(name, on)| *on && *name == field) {
        return Err(format!("type {type_} needs the {field} field"));
    }
    Ok(())
}

impl TryFrom<RawHTTPRouteFilter> for HTTPRouteFilter {
    type Error = String;

    fn try_from(raw: RawHTTPRouteFilter) -> Result<Self, String> {
        let set = [
            (
                "requestHeaderModifier",
                raw.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                raw.response_header_modifier.is_some(),
            ),
            ("requestRedirect", raw.request_redirect.is_some()),
            ("urlRewrite", raw.url_rewrite.is_some()),
            ("requestMirror", raw.request_mirror.is_some()),
        ];
        let filter = match raw.type_ {
            HTTPFilterType::RequestHeaderModifier => raw
                .request_header_modifier
                .map(HTTPRouteFilter::RequestHeaderModifier),
            HTTPFilterType::ResponseHeaderModifier => raw
                .response_header_modifier
                .map(HTTPRouteFilter::ResponseHeaderModifier),
            HTTPFilterType::RequestRedirect => {
                raw.request_redirect.map(HTTPRouteFilter::RequestRedirect)
            }
            HTTPFilterType::URLRewrite => raw.url_rewrite.map(HTTPRouteFilter::URLRewrite),
            HTTPFilterType::RequestMirror => raw.request_mirror.map(HTTPRouteFilter::RequestMirror),
        };
        let (type_, field) = http_filter_names(raw.type_);
        one_field(type_, field, &set)?;
        filter.ok_or_else(|| format!("type {type_} needs the {field} field"))
    }
}

fn http_filter_names(t: HTTPFilterType) -> (&'static str, &'static str) {
    match t {
        HTTPFilterType::RequestHeaderModifier => ("RequestHeaderModifier", "requestHeaderModifier"),
        HTTPFilterType::ResponseHeaderModifier => {
            ("ResponseHeaderModifier", "responseHeaderModifier")
        }
        HTTPFilterType::RequestRedirect => ("RequestRedirect", "requestRedirect"),
        HTTPFilterType::URLRewrite => ("URLRewrite", "urlRewrite"),
        HTTPFilterType::RequestMirror => ("RequestMirror", "requestMirror"),
    }
}

impl From<HTTPRouteFilter> for RawHTTPRouteFilter {
    fn from(f: HTTPRouteFilter) -> Self {
        let mut raw = RawHTTPRouteFilter {
            type_: HTTPFilterType::RequestHeaderModifier,
            request_header_modifier: None,
            response_header_modifier: None,
            request_redirect: None,
            url_rewrite: None,
            request_mirror: None,
        };
        match f {
            HTTPRouteFilter::RequestHeaderModifier(h) => raw.request_header_modifier = Some(h),
            HTTPRouteFilter::ResponseHeaderModifier(h) => {
                raw.type_ = HTTPFilterType::ResponseHeaderModifier;
                raw.response_header_modifier = Some(h);
            }
            HTTPRouteFilter::RequestRedirect(r) => {
                raw.type_ = HTTPFilterType::RequestRedirect;
                raw.request_redirect = Some(r);
            }
            HTTPRouteFilter::URLRewrite(r) => {
                raw.type_ = HTTPFilterType::URLRewrite;
                raw.url_rewrite = Some(r);
            }
            HTTPRouteFilter::RequestMirror(m) => {
                raw.type_ = HTTPFilterType::RequestMirror;
                raw.request_mirror = Some(m);
            }
        }
        raw
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum GRPCFilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestMirror,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawGRPCRouteFilter {
    #[serde(rename = "type")]
    type_: GRPCFilterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response_header_modifier: Option<HTTPHeaderFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_mirror: Option<HTTPRequestMirrorFilter>,
}

impl TryFrom<RawGRPCRouteFilter> for GRPCRouteFilter {
    type Error = String;

    fn try_from(raw: RawGRPCRouteFilter) -> Result<Self, String> {
        let set = [
            (
                "requestHeaderModifier",
                raw.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                raw.response_header_modifier.is_some(),
            ),
            ("requestMirror", raw.request_mirror.is_some()),
        ];
        let (type_, field, filter) = match raw.type_ {
            GRPCFilterType::RequestHeaderModifier => (
                "RequestHeaderModifier",
                "requestHeaderModifier",
                raw.request_header_modifier
                    .map(GRPCRouteFilter::RequestHeaderModifier),
            ),
            GRPCFilterType::ResponseHeaderModifier => (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                raw.response_header_modifier
                    .map(GRPCRouteFilter::ResponseHeaderModifier),
            ),
            GRPCFilterType::RequestMirror => (
                "RequestMirror",
                "requestMirror",
                raw.request_mirror.map(GRPCRouteFilter::RequestMirror),
            ),
        };
        one_field(type_, field, &set)?;
        filter.ok_or_else(|| format!("type {type_} needs the {field} field"))
    }
}

impl From<GRPCRouteFilter> for RawGRPCRouteFilter {
    fn from(f: GRPCRouteFilter) -> Self {
        let (type_, req, resp, mirror) = match f {
            GRPCRouteFilter::RequestHeaderModifier(h) => {
                (GRPCFilterType::RequestHeaderModifier, Some(h), None, None)
            }
            GRPCRouteFilter::ResponseHeaderModifier(h) => {
                (GRPCFilterType::ResponseHeaderModifier, None, Some(h), None)
            }
            GRPCRouteFilter::RequestMirror(m) => {
                (GRPCFilterType::RequestMirror, None, None, Some(m))
            }
        };
        RawGRPCRouteFilter {
            type_,
            request_header_modifier: req,
            response_header_modifier: resp,
            request_mirror: mirror,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawPathModifier {
    #[serde(rename = "type")]
    type_: PathModifierType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replace_prefix_match: Option<String>,
}

impl TryFrom<RawPathModifier> for HTTPPathModifier {
    type Error = String;

    fn try_from(raw: RawPathModifier) -> Result<Self, String> {
        let set = [
            ("replaceFullPath", raw.replace_full_path.is_some()),
            ("replacePrefixMatch", raw.replace_prefix_match.is_some()),
        ];
        let (type_, field, modifier) = match raw.type_ {
            PathModifierType::ReplaceFullPath => (
                "ReplaceFullPath",
                "replaceFullPath",
                raw.replace_full_path.map(HTTPPathModifier::ReplaceFullPath),
            ),
            PathModifierType::ReplacePrefixMatch => (
                "ReplacePrefixMatch",
                "replacePrefixMatch",
                raw.replace_prefix_match
                    .map(HTTPPathModifier::ReplacePrefixMatch),
            ),
        };
        one_field(type_, field, &set)?;
        modifier.ok_or_else(|| format!("type {type_} needs the {field} field"))
    }
}

impl From<HTTPPathModifier> for RawPathModifier {
    fn from(m: HTTPPathModifier) -> Self {
        match m {
            HTTPPathModifier::ReplaceFullPath(p) => RawPathModifier {
                type_: PathModifierType::ReplaceFullPath,
                replace_full_path: Some(p),
                replace_prefix_match: None,
            },
            HTTPPathModifier::ReplacePrefixMatch(p) => RawPathModifier {
                type_: PathModifierType::ReplacePrefixMatch,
                replace_full_path: None,
                replace_prefix_match: Some(p),
            },
        }
    }
}
