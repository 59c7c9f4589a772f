//! A route's injected faults (FaultInjection): which requests get them, and for each
//! request whether it is delayed, aborted, or both.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};

use super::filter::Share;
use super::Matcher;
use crate::config::{self, FaultConfig};

/// A compiled fault.
#[derive(Debug)]
pub struct Fault {
    pub name: Arc<str>,
    /// Header conditions only.
    matcher: Matcher,
    delay: Option<(Duration, Share)>,
    abort: Option<Abort>,
}

/// How an aborted request is answered.
#[derive(Debug, Clone, Copy)]
pub struct Abort {
    pub status: StatusCode,
    /// For gRPC calls; `None`: the code matching `status`.
    pub grpc: Option<u32>,
    share: Share,
}

/// What happens to one request.
#[derive(Debug, Default)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
}

impl Fault {
    /// `None` when a header condition is invalid, which validation has refused.
    pub fn build(config: &FaultConfig) -> Option<Self> {
        let headers = config::RouteMatch {
            headers: config.headers.clone(),
            ..Default::default()
        };
        Some(Self {
            name: config.name.as_deref().unwrap_or("fault").into(),
            matcher: Matcher::build(Some(&headers))?,
            delay: config
                .delay
                .as_ref()
                .map(|d| (d.fixed.get(), Share::percent(d.percent))),
            abort: match &config.abort {
                Some(a) => Some(Abort {
                    status: StatusCode::from_u16(a.http_status.unwrap_or(500)).ok()?,
                    grpc: a.grpc_status,
                    share: Share::percent(a.percent),
                }),
                None => None,
            },
        })
    }

    /// The faults this request gets: none unless it meets the header conditions, then
    /// each drawn by its share.
    pub fn draw<B>(&self, req: &Request<B>) -> Injected {
        if !self.matcher.matches(req) {
            return Injected::default();
        }
        Injected {
            delay: self
                .delay
                .filter(|(_, share)| share.sampled())
                .map(|(d, _)| d),
            abort: self.abort.filter(|a| a.share.sampled()),
        }
    }
}
