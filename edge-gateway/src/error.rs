//! Every error a client can get: an HTTP status and a JSON body `{code, message}`. The codes
//! are stable (the app maps them to messages in the user's language); docs/api-errors.md
//! lists them.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use hotaru_events::domain::RejectionReason;
use hotaru_server::RegistrationError;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429 answers.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "UNAUTHORIZED", "a valid bearer API key is required")
    }

    pub fn not_found() -> Self {
        Self::new(404, "NOT_FOUND", "no such resource")
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(500, "INTERNAL", "the server failed; try again later")
    }

    /// A read of the log that failed: 503 when the backend is unreachable, slow or shut
    /// down (a client should retry), 500 for what a retry cannot mend (a corrupt frame).
    pub fn from_log(e: hotaru_log::LogError) -> Self {
        use hotaru_log::LogError;
        match e {
            LogError::Backend(_) | LogError::Contention(_) | LogError::Closed => {
                tracing::error!(error = %e, "the event log is unavailable");
                Self::unavailable()
            }
            e => Self::internal(e),
        }
    }

    /// 503: the service cannot answer now; try again later.
    pub fn unavailable() -> Self {
        Self::new(
            503,
            "UNAVAILABLE",
            "the service is unavailable; try again later",
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if let Some(s) = self.retry_after {
            r.insert_header(("Retry-After", s.to_string()));
        }
        r.json(Body {
            code: self.code,
            message: &self.message,
        })
    }
}

/// The registration errors as the device and the health centre see them. B never says
/// which of unknown, used or expired.
pub fn from_registration(e: RegistrationError, now_ms: u64) -> ApiError {
    match e {
        RegistrationError::Rejected(r) => match r {
            RejectionReason::Format => ApiError::bad_request(
                "ERR_A_NUMBER_FORMAT",
                "the processing number must be exactly 8 half-width digits",
            ),
            RejectionReason::Unknown | RejectionReason::AlreadyUsed | RejectionReason::Expired => {
                ApiError::bad_request("ERR_B_NUMBER_WRONG", "the processing number is wrong")
            }
            RejectionReason::AttemptLimit => ApiError::new(
                429,
                "ERR_C_ATTEMPT_LIMIT",
                "too many failed attempts; try again later",
            ),
            RejectionReason::NothingToSubmit => ApiError::bad_request(
                "ERR_G_NOTHING_TO_SUBMIT",
                "there are no contact records to submit; submission is not needed",
            ),
            RejectionReason::NoValidKeys => ApiError::bad_request(
                "ERR_G_NO_VALID_KEYS",
                "none of the submitted keys can be published",
            ),
        },
        RegistrationError::AttemptLimit(until) => ApiError {
            retry_after: Some(until.0.saturating_sub(now_ms).div_ceil(1000)),
            ..ApiError::new(
                429,
                "ERR_C_ATTEMPT_LIMIT",
                "too many failed attempts; try again later",
            )
        },
        RegistrationError::UnknownCase => ApiError::new(404, "CASE_NOT_FOUND", "no such case"),
        RegistrationError::NotYourCase => ApiError::new(
            403,
            "CASE_FORBIDDEN",
            "the case belongs to another health centre",
        ),
        RegistrationError::QuotaExceeded(q) => ApiError::new(
            429,
            "QUOTA_EXCEEDED",
            format!("the daily quota of {q} processing numbers is used up"),
        ),
        RegistrationError::AlreadyIssued => ApiError::new(
            409,
            "NUMBER_ALREADY_ISSUED",
            "this case already has its processing number; it is shown only once",
        ),
        RegistrationError::InvalidDate => ApiError::bad_request(
            "INVALID_DATE",
            "the date must be today or within the last 60 days",
        ),
        RegistrationError::InvalidRevisionToken => ApiError::bad_request(
            "INVALID_REVISION_TOKEN",
            "the revision token is invalid, belongs to another number, or leaves out keys already uploaded",
        ),
        RegistrationError::RevisionWindowClosed => ApiError::bad_request(
            "REVISION_WINDOW_CLOSED",
            "the time to add keys to this upload is over",
        ),
        RegistrationError::Log(e) => {
            tracing::error!(error = %e, "event log failed");
            ApiError::new(
                503,
                "UNAVAILABLE",
                "the service is unavailable; try again later",
            )
        }
    }
}

/// A command's failure as the client sees it.
pub(crate) fn command_error(
    g: &crate::Gateway,
    e: hotaru_server::commands::CommandError,
) -> ApiError {
    use hotaru_server::commands::CommandError;
    match e {
        CommandError::Registration(e) => from_registration(e, g.now_ms()),
        CommandError::Batch(hotaru_server::BatchError::NoSigningKey(r)) => ApiError::new(
            409,
            "NO_SIGNING_KEY",
            format!("region {r} has no signing key: run `hotaru keys generate`"),
        ),
        CommandError::Log(_) | CommandError::Batch(_) | CommandError::Unavailable(_) => {
            tracing::error!(error = %e, "command failed");
            ApiError::unavailable()
        }
        CommandError::Malformed(_) => ApiError::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::ApiError;
    use hotaru_log::LogError;

    /// A log the gateway cannot reach (an API-key check, index.txt) is a 503 to retry, not a
    /// 500; a damaged one is a 500.
    #[test]
    fn an_unreachable_log_is_503_and_a_corrupt_one_500() {
        for e in [
            LogError::Backend("timed out".into()),
            LogError::Closed,
            LogError::Contention(hotaru_events::Context::Registration),
        ] {
            let a = ApiError::from_log(e);
            assert_eq!((a.status, a.code), (503, "UNAVAILABLE"));
        }
        let a = ApiError::from_log(LogError::Corrupt {
            context: hotaru_events::Context::Registration,
            position: 3,
            reason: "bad".into(),
        });
        assert_eq!((a.status, a.code), (500, "INTERNAL"));
    }
}
