//! The API's error answer: `{"error":{"code","message"}}` with a fixed set of codes.

use audience_core::ports::PortError;
use audience_tiktok::TikTokError;
use serde_json::json;

use super::ApiResponse;

/// Every error code the API answers, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthorized,
    NotFound,
    InvalidRequest,
    NotConnected,
    MappingLocked,
    MappingMissing,
    AdvertiserNotAuthorized,
    AudienceLimit,
    Conflict,
    /// TikTok refused the project's token: the user must reconnect.
    ReconnectRequired,
    TikTokError,
    /// Our own infrastructure failed (DynamoDB, Secrets Manager, ... unreachable, or misconfigured).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::MappingLocked => "mapping_locked",
            ErrorCode::MappingMissing => "mapping_missing",
            ErrorCode::AdvertiserNotAuthorized => "advertiser_not_authorized",
            ErrorCode::AudienceLimit => "audience_limit",
            ErrorCode::Conflict => "conflict",
            ErrorCode::ReconnectRequired => "reconnect_required",
            ErrorCode::TikTokError => "tiktok_error",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotConnected
            | ErrorCode::MappingLocked
            | ErrorCode::MappingMissing
            | ErrorCode::AdvertiserNotAuthorized
            | ErrorCode::AudienceLimit
            | ErrorCode::Conflict
            | ErrorCode::ReconnectRequired => 409,
            ErrorCode::TikTokError => 502,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error answer. Messages never carry a token, a secret or a raw identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// A TikTok call failed: TikTok's message and request id, never the request itself.
    pub fn tiktok(e: &TikTokError) -> ApiError {
        let mut message = format!("TikTok {}: {}", e.endpoint(), e.message());
        if let Some(code) = e.code() {
            message.push_str(&format!(" (code {code})"));
        }
        if let Some(id) = e.request_id() {
            message.push_str(&format!(" [request_id {id}]"));
        }
        ApiError::new(ErrorCode::TikTokError, message)
    }

    pub fn into_response(self) -> ApiResponse {
        let status = self.code.status();
        if status >= 500 {
            tracing::error!(code = self.code.as_str(), message = %self.message, "API error");
        }
        ApiResponse::json(
            status,
            &json!({"error": {"code": self.code.as_str(), "message": self.message}}),
        )
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> ApiError {
        match e {
            PortError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            PortError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            PortError::Invalid(m) => ApiError::invalid(m),
            other => ApiError::internal(other.to_string()),
        }
    }
}
