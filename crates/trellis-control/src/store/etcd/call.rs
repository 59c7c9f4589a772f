//! One request to the cluster: sent to any member, tried again on another while that is
//! safe, and given up on at the request timeout with [`StoreError::Unavailable`].
//!
//! The client balances requests over the members' connections and keeps trying to
//! reconnect to a member that is down, so a request can land on a dead member and fail at
//! once; another attempt goes elsewhere. Whether trying again is safe depends on whether
//! the request may have reached etcd:
//!
//! - not sent: the connection could not be made, or the member answered "no leader"
//!   (it refuses before proposing anything). Any request may be retried.
//! - in flight: the member failed or timed out after the request left. A read is retried;
//!   a write is not, because it may have been applied, and a compare-and-swap retried
//!   after its own success would report a conflict with itself. The caller is told the
//!   outcome is unknown.
//! - refused: authentication, permissions, a malformed request. Reported as it is.

use std::future::Future;
use std::time::Duration;

use etcd_client::Client;
use tokio::time::Instant;
use tonic::Code;

use crate::store::StoreError;

/// First and longest pause between two attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(250));

/// Whether an operation changes the store, which decides what may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read(&'static str),
    Write(&'static str),
}

/// What a failed attempt means for trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    NotSent,
    InFlight,
    Refused,
}

/// The client, and what messages and deadlines need to know about the cluster.
#[derive(Clone)]
pub(super) struct Caller {
    pub client: Client,
    /// The endpoints, comma-separated, for messages.
    pub endpoints: String,
    pub timeout: Duration,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read(name) | Op::Write(name) => name,
        }
    }
}

impl Caller {
    /// Runs `attempt` until it succeeds, fails in a way that retrying cannot fix, or the
    /// request timeout passes.
    pub(super) async fn call<T, F, Fut>(&self, op: Op, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = BACKOFF.0;
        let mut last: Option<etcd_client::Error> = None;
        loop {
            // A read stuck on one member (one that lost its leader and has not noticed
            // yet) is abandoned early and tried on another; a write must wait for its
            // answer.
            let attempt_deadline = match op {
                Op::Read(_) => deadline.min(Instant::now() + self.read_attempt_timeout()),
                Op::Write(_) => deadline,
            };
            let error =
                match tokio::time::timeout_at(attempt_deadline, attempt(self.client.clone())).await
                {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(error)) => error,
                    Err(_) if Instant::now() < deadline => {
                        tracing::debug!(
                            op = op.name(),
                            "etcd read got no answer in time; trying again"
                        );
                        continue;
                    }
                    Err(_) => {
                        return Err(match op {
                            Op::Write(_) => self.unknown_outcome(op, "no answer"),
                            Op::Read(_) => self.timed_out(op, last.as_ref()),
                        })
                    }
                };
            match classify(&error) {
                Failure::Refused => {
                    return Err(StoreError::Backend {
                        op: op.name(),
                        source: describe(&error).into(),
                    })
                }
                Failure::InFlight if matches!(op, Op::Write(_)) => {
                    return Err(self.unknown_outcome(op, &describe(&error)));
                }
                Failure::NotSent | Failure::InFlight => {}
            }
            tracing::debug!(op = op.name(), %error, "etcd request failed; trying again");
            last = Some(error);
            if Instant::now() + backoff >= deadline {
                return Err(self.timed_out(op, last.as_ref()));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// How long one attempt of a read may take: a quarter of the request timeout, at
    /// least a quarter of a second.
    fn read_attempt_timeout(&self) -> Duration {
        (self.timeout / 4).max(Duration::from_millis(250))
    }

    /// No member could take the request in time; nothing was written.
    pub(super) fn timed_out(&self, op: Op, last: Option<&etcd_client::Error>) -> StoreError {
        let cause = last.map_or_else(|| "no answer".to_owned(), describe);
        StoreError::Unavailable {
            reason: format!(
                "cannot {} in etcd at {}: no member with a leader answered within {:?} \
                 (last error: {cause})",
                op.name(),
                self.endpoints,
                self.timeout,
            ),
        }
    }

    fn unknown_outcome(&self, op: Op, cause: &str) -> StoreError {
        StoreError::Unavailable {
            reason: format!(
                "cannot {} in etcd at {}: the member failed while the write was in flight, \
                 so it may or may not have been applied ({cause})",
                op.name(),
                self.endpoints,
            ),
        }
    }
}

/// A failure in one line: a gRPC status's message and its root cause, without the
/// client's debug rendering of the status.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return error.to_string();
    };
    let message = status.message();
    let mut root: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(next) = root.and_then(std::error::Error::source) {
        root = Some(next);
    }
    match root.map(ToString::to_string) {
        Some(cause) if !message.contains(&cause) => format!("{message}: {cause}"),
        _ => message.to_owned(),
    }
}

/// Sorts an etcd failure by whether the request may have reached the cluster.
pub(super) fn classify(error: &etcd_client::Error) -> Failure {
    use etcd_client::Error;
    match error {
        Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable if not_sent(status.message()) => Failure::NotSent,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted => Failure::InFlight,
            _ => Failure::Refused,
        },
        // Building a connection, before anything is sent.
        Error::TransportError(_) => Failure::NotSent,
        // The watch stream's request channel closed under it.
        Error::WatchError(_) | Error::IoError(_) => Failure::InFlight,
        _ => Failure::Refused,
    }
}

/// Whether an `Unavailable` status says the request never reached etcd's consensus: the
/// connection could not be made (tonic reports hyper's connector errors by their
/// message only), or the member refused it for want of a leader.
fn not_sent(message: &str) -> bool {
    const NOT_SENT: [&str; 5] = [
        "etcdserver: no leader",
        "tcp connect error",
        "tcp open error",
        "dns error",
        "error trying to connect",
    ];
    NOT_SENT.iter().any(|known| message.starts_with(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_by_whether_the_request_may_have_arrived() {
        let cases = [
            (Code::Unavailable, "etcdserver: no leader", Failure::NotSent),
            (Code::Unavailable, "tcp connect error", Failure::NotSent),
            (Code::Unavailable, "dns error", Failure::NotSent),
            (
                Code::Unavailable,
                "error trying to connect: tcp connect error: Connection refused (os error 111)",
                Failure::NotSent,
            ),
            (
                Code::Unavailable,
                "etcdserver: request timed out",
                Failure::InFlight,
            ),
            (Code::Unavailable, "transport error", Failure::InFlight),
            (
                Code::Unknown,
                "h2 protocol error: connection reset",
                Failure::InFlight,
            ),
            (Code::Cancelled, "Timeout expired", Failure::InFlight),
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
                Failure::Refused,
            ),
            (
                Code::PermissionDenied,
                "etcdserver: permission denied",
                Failure::Refused,
            ),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
                Failure::Refused,
            ),
        ];
        for (code, message, want) in cases {
            let error = etcd_client::Error::GRpcStatus(tonic::Status::new(code, message));
            assert_eq!(classify(&error), want, "{code:?} {message}");
        }
    }
}
