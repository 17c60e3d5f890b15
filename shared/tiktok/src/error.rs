//! The client's one error type. TikTok answers almost everything with HTTP 200 and a `code`; the code (or
//! the absence of an envelope) decides what the caller should do, given as [`ErrorAction`].

use std::fmt;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorAction {
    /// Transient (server error, task not ready, write conflict, limiter unavailable): retry later.
    Retry,
    /// A rate or frequency limit (app QPS, advertiser limits, the audience's daily budget): back off.
    RateLimited,
    /// The token is missing, expired, revoked or does not cover the advertiser, a scope is missing, or the
    /// auth code is invalid: the connection must be re-authorized; retrying does not help.
    ReconnectRequired,
    /// The request is wrong (bad parameters, local validation): fix it, do not retry.
    InvalidRequest,
    /// The object does not exist (e.g. the audience was deleted on TikTok's side).
    NotFound,
    /// An audience edit TikTok refuses now (fewer than 1,000 matched users after it, or still processing):
    /// hold the change for a later run.
    NotEditable,
    /// TikTok rejected a customer file (signature, empty, too large, suffix, calculate_type, ...): fix the file.
    FileRejected,
    /// An uploaded `file_path` expired before it was used (40910): upload the file again, then retry. Repeating
    /// the same request cannot succeed, so the client does not retry it.
    FileExpired,
    /// The audience expired (TikTok only allows deleting it): a new audience must be created.
    Expired,
    /// A new streaming audience is not ready for mappings yet (40201 on `segment/mapping/`, for a minute or
    /// two): try again in a later run rather than spending retries now.
    NotReady,
    /// Too many ids in one request: split the batch.
    BatchTooLarge,
    /// The app itself is not set up for this (wrong app id or secret, app disabled, developer rejected, not
    /// allow-listed, no permission): the operator must fix the app's configuration; reconnecting does not help.
    Configuration,
    /// No TikTok envelope came back (HTTP 429/5xx without envelope, dropped connection, timeout): the
    /// request may or may not have been applied.
    OutcomeUnknown,
}

impl ErrorAction {
    /// Whether the client's own retry loop may retry this for an operation that is safe to repeat.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorAction::Retry | ErrorAction::RateLimited | ErrorAction::OutcomeUnknown
        )
    }
}

impl fmt::Display for ErrorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where a code came from: 40002 means "not editable" only on an audience edit, 40201 "not ready" only on
/// a streaming mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    AudienceEdit,
    Mapping,
    Other,
}

/// TikTok's 40002 texts on an audience edit (its return-code list and what peers log). 40002 is also the
/// generic parameter error, so only these messages mean "hold the change".
const PROCESSING_TEXT: &str = "currently being updated or under processing";
const TOO_SMALL_TEXTS: [&str; 2] = ["too small", "fewer than 1000"];
const EXPIRED_TEXT: &str = "has expired";

/// What a 40002 on an audience edit means, read from TikTok's message.
fn classify_40002(message: &str) -> ErrorAction {
    let m = message.to_ascii_lowercase();
    if m.contains(PROCESSING_TEXT) || TOO_SMALL_TEXTS.iter().any(|t| m.contains(t)) {
        ErrorAction::NotEditable
    } else if m.contains(EXPIRED_TEXT) {
        ErrorAction::Expired
    } else {
        ErrorAction::InvalidRequest
    }
}

/// Success codes: 0, 20001 (partial success) and 40050 (duplicated request: already done).
pub fn is_success_code(code: i64) -> bool {
    matches!(code, 0 | 20001 | 40050)
}

/// TikTok's documented codes (its SDK's `tiktok_code.py` names) → what to do.
pub(crate) fn classify(code: i64, kind: CallKind, message: &str) -> ErrorAction {
    match code {
        // REQUEST_TOO_FREQUENT, advertiser limit, BIZ_FC_ERROR (the audience's daily budget), FREQUENCY_LIMITED.
        40100 | 40133 | 40016 | 40132 | 61000 => ErrorAction::RateLimited,
        // The advertiser's grant no longer works: permission withdrawn, token expired/empty/invalid/not for this
        // advertiser, refresh token expired/invalid, auth code used, advertiser logged out, not the same
        // identity that authorized, advertiser no longer exists.
        40001 | 40102..=40107 | 40110 | 40114 | 40119 | 40300 => ErrorAction::ReconnectRequired,
        40007 => ErrorAction::NotFound,
        40002 if kind != CallKind::Other => classify_40002(message),
        40201 if kind == CallKind::Mapping => ErrorAction::NotReady,
        40011 | 40061 => ErrorAction::BatchTooLarge,
        // INVALID_PARTNER (app id + secret), APP_FORBIDDEN, APP_METHOD_FORBIDDEN, NOT_IN_WHITELIST,
        // DEVELOPER_REJECTED, DEVELOPER_NO_PERMISSION, SCOPE_NOT_AUTHORIZED (the app's permissions).
        40101 | 40113 | 40117 | 40118 | 40124 | 40125 | 40130 => ErrorAction::Configuration,
        40200..=40202 => ErrorAction::Retry,
        40910 => ErrorAction::FileExpired,
        40900..=40999 => ErrorAction::FileRejected,
        50000..=52999 | 60001 => ErrorAction::Retry,
        _ => ErrorAction::InvalidRequest,
    }
}

/// A failed TikTok call. Never contains a token or a secret (URLs are stripped from transport errors).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "TikTok {endpoint}: {action} (code {code:?}, http {http_status:?}): {message} [request_id {request_id:?}, attempts {attempts}]"
)]
pub struct TikTokError {
    action: ErrorAction,
    endpoint: &'static str,
    code: Option<i64>,
    message: String,
    request_id: Option<String>,
    http_status: Option<u16>,
    attempts: u32,
    completed_items: usize,
    retry_after: Option<std::time::Duration>,
}

impl TikTokError {
    pub(crate) fn new(
        action: ErrorAction,
        endpoint: &'static str,
        message: impl Into<String>,
    ) -> Self {
        TikTokError {
            action,
            endpoint,
            code: None,
            message: message.into(),
            request_id: None,
            http_status: None,
            attempts: 0,
            completed_items: 0,
            retry_after: None,
        }
    }

    pub(crate) fn api(
        endpoint: &'static str,
        code: i64,
        message: String,
        request_id: Option<String>,
        kind: CallKind,
    ) -> Self {
        TikTokError {
            code: Some(code),
            request_id,
            http_status: Some(200),
            ..TikTokError::new(classify(code, kind, &message), endpoint, message)
        }
    }

    pub(crate) fn invalid(endpoint: &'static str, message: impl Into<String>) -> Self {
        TikTokError::new(ErrorAction::InvalidRequest, endpoint, message)
    }

    pub(crate) fn with_http_status(mut self, s: Option<u16>) -> Self {
        self.http_status = s;
        self
    }
    pub(crate) fn with_request_id(mut self, r: Option<String>) -> Self {
        self.request_id = r;
        self
    }
    pub(crate) fn with_attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }
    pub(crate) fn with_retry_after(mut self, d: Option<std::time::Duration>) -> Self {
        self.retry_after = d;
        self
    }
    pub(crate) fn with_completed(mut self, n: usize) -> Self {
        self.completed_items = n;
        self
    }

    /// What the caller should do.
    pub fn action(&self) -> ErrorAction {
        self.action
    }
    /// The endpoint path, e.g. `dmp/custom_audience/update/`.
    pub fn endpoint(&self) -> &'static str {
        self.endpoint
    }
    /// TikTok's `code`, when an envelope came back.
    pub fn code(&self) -> Option<i64> {
        self.code
    }
    /// TikTok's `message`, or a description of the transport failure / local validation error.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// TikTok's `request_id`, when an envelope came back.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
    /// The HTTP status, when a response came back.
    pub fn http_status(&self) -> Option<u16> {
        self.http_status
    }
    /// How many HTTP attempts were made (0 when the request failed local validation).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
    /// The least wait before trying again, when known (from the app-wide rate gate).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }
    /// For calls the client splits (segment mappings): how many input items were confirmed applied before
    /// this error. Everything after them was not sent or not confirmed.
    pub fn completed_items(&self) -> usize {
        self.completed_items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_actions() {
        use ErrorAction::*;
        let other = CallKind::Other;
        let cases = [
            (40100, RateLimited),
            (40133, RateLimited),
            (40016, RateLimited),
            (40132, RateLimited),
            (61000, RateLimited),
            (40001, ReconnectRequired),
            (40102, ReconnectRequired),
            (40103, ReconnectRequired),
            (40104, ReconnectRequired),
            (40105, ReconnectRequired),
            (40106, ReconnectRequired),
            (40107, ReconnectRequired),
            (40110, ReconnectRequired),
            (40114, ReconnectRequired),
            (40119, ReconnectRequired),
            (40300, ReconnectRequired),
            (40101, Configuration),
            (40113, Configuration),
            (40117, Configuration),
            (40124, Configuration),
            (40125, Configuration),
            (40130, Configuration),
            (40007, NotFound),
            (40002, InvalidRequest),
            (40000, InvalidRequest),
            (40011, BatchTooLarge),
            (40061, BatchTooLarge),
            (40118, Configuration),
            (40200, Retry),
            (40201, Retry),
            (40202, Retry),
            (40900, FileRejected),
            (40906, FileRejected),
            (40907, FileRejected),
            (40908, FileRejected),
            (40909, FileRejected),
            (40910, FileExpired),
            (40915, FileRejected),
            (50000, Retry),
            (50002, Retry),
            (51004, Retry),
            (52001, Retry),
            (60001, Retry),
        ];
        for (code, want) in cases {
            assert_eq!(classify(code, other, "x"), want, "code {code}");
        }
        let edit = CallKind::AudienceEdit;
        // 40002 on an edit holds only on TikTok's processing and size texts; anything else is a bad request.
        let processing =
            "The audience is currently being updated or under processing, please try again later";
        assert_eq!(classify(40002, edit, processing), NotEditable);
        let small =
            "The audience size is too small (fewer than 1000 matched users): 12 after APPEND";
        assert_eq!(classify(40002, edit, small), NotEditable);
        let expired = "The audience has expired and can only be deleted";
        assert_eq!(classify(40002, edit, expired), Expired);
        assert_eq!(
            classify(40002, edit, "custom_audience_id: Invalid value"),
            InvalidRequest
        );
        // 40201 on a mapping: a new streaming audience, not ready yet; the engine retries in a later run.
        assert_eq!(classify(40201, CallKind::Mapping, "not ready"), NotReady);
        assert!(!NotReady.is_retryable());
        // An expired file path is not retried as is: the same request cannot succeed.
        assert!(!FileExpired.is_retryable());
    }

    #[test]
    fn success_codes() {
        assert!(is_success_code(0) && is_success_code(20001) && is_success_code(40050));
        assert!(!is_success_code(40000) && !is_success_code(1));
    }
}
