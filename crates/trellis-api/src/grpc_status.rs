//! gRPC status codes by name, as configuration spells them (`unavailable`,
//! `resource-exhausted`): the statuses a GRPCRoute's `retry` retries, and the proxy's
//! own configuration of the same.

use serde::{Deserialize, Serialize};

/// A gRPC status other than `OK` (the gRPC spec's codes 1 to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcStatus {
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcStatus {
    const ALL: [GrpcStatus; 16] = [
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The number on the wire (`grpc-status`).
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The status numbered `code`; `None` for 0 (`OK`) and unknown numbers.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_round_trip() {
        for status in GrpcStatus::ALL {
            assert_eq!(GrpcStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(GrpcStatus::from_code(0), None);
        assert_eq!(GrpcStatus::from_code(17), None);
        assert_eq!(GrpcStatus::ResourceExhausted.code(), 8);
        let named: GrpcStatus =
            serde_json::from_str("\"deadline-exceeded\"").expect("kebab-case name");
        assert_eq!(named, GrpcStatus::DeadlineExceeded);
        assert!(serde_json::from_str::<GrpcStatus>("\"ok\"").is_err());
    }
}
