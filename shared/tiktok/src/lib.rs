//! TikTok Marketing API client (v1.3) for the endpoints audience-sync uses: OAuth, advertiser and user
//! info, customer-file audiences and the streaming (segment) audience API.
//!
//! - One configurable host; every call goes to `<host>/open_api/v1.3/<path>/` with the `Access-Token`
//!   header; the consent page is `<host>/portal/auth`.
//! - TikTok's envelope `code` decides, never the HTTP status alone; answers without an envelope (429, 5xx
//!   with HTML, dropped connections, timeouts) are [`ErrorAction::OutcomeUnknown`].
//! - The app-wide [`RateGate`](audience_core::ports::RateGate), when set, spaces every request of the app;
//!   without one, an in-process `governor` limiter spaces requests at the configured rate (no bursts).
//! - Retryable and rate-limited errors are retried with exponential backoff and full jitter, bounded in
//!   attempts and total time.
//! - [`AudienceAdapter`] implements the sync engine's port `audience_core::sync::api::AudienceApi`.
//! - Tokens and secrets are [`AccessToken`] / [`AppSecret`]: redacted in `Debug`, never logged.

mod adapter;
mod backoff;
mod client;
mod error;
mod secret;
mod types;

pub use adapter::{AudienceAdapter, api_error, calculate_type};
pub use client::{
    ClientConfig, ClientStats, ConfigError, DEFAULT_HOST, DEFAULT_TIER_QPS, LIST_PAGE_SIZE,
    MAX_AUDIENCE_IDS, MAX_FILE_BYTES, MAX_MAPPING_USERS, RetryPolicy, TIER_SHARE, TikTokClient,
};
pub use error::{ErrorAction, TikTokError, is_success_code};
pub use secrecy::ExposeSecret;
pub use secret::{AccessToken, AppSecret};
pub use types::{
    AdvertiserInfo, ApiResponse, AudienceDetails, AudienceHistory, AudienceRecord,
    AuthorizedAdvertiser, CalculateType, IdSchema, MappingAction, MappingBatch, PageInfo,
    TokenGrant, UpdateAction, UserInfo,
};
