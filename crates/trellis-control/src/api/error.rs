//! The one place where a failure becomes what the client sees: a status code and
//! `{"error": "one line"}` (plus, for an apply that stopped part-way, what it had
//! already applied).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::storage::StorageError;
use super::write::{Applied, WriteError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong: an unknown kind, a document that does not validate.
    #[error("{0}")]
    BadRequest(String),
    /// The framework refused the request before a handler saw it (a body over the size
    /// limit, a malformed query string).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// The request needs the admin token and carries none.
    #[error("{0}")]
    Unauthorized(String),
    /// The request carries a token, but not the admin token.
    #[error(
        "the admin token is wrong: use the admin-token file in the control plane's data directory"
    )]
    Forbidden,
    /// No such object or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists but does not take this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A write lost a compare-and-swap; `applied` lists what an apply had written
    /// before it.
    #[error("{error}")]
    Conflict {
        error: WriteError,
        applied: Vec<Applied>,
    },
    /// The store failed, or holds something that is not a resource.
    #[error("{0}")]
    Storage(#[from] StorageError),
    /// Something the control plane made itself is unusable: a bug, not the caller's
    /// fault.
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    #[serde(skip_serializing_if = "<[Applied]>::is_empty")]
    applied: &'a [Applied],
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            // etcd without quorum or out of reach: worth retrying, not a bug.
            ApiError::Storage(StorageError::Store(e)) if e.is_unavailable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Storage(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A write that failed part-way through an apply, with what was written before it.
    pub(crate) fn from_write(error: WriteError, applied: Vec<Applied>) -> Self {
        match error {
            WriteError::Storage(e) => ApiError::Storage(e),
            error => ApiError::Conflict { error, applied },
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let message = format!("cannot read the request body: {}", e.body_text());
        ApiError::Rejected {
            status: e.status(),
            message,
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::Rejected {
            status: e.status(),
            message: e.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "API request failed");
        }
        let applied = match &self {
            ApiError::Conflict { applied, .. } => applied.as_slice(),
            _ => &[],
        };
        // One line, whatever the cause chain held.
        let error = self.to_string().replace('\n', " ");
        (status, Json(Body { error, applied })).into_response()
    }
}
