//! The sync engine's TikTok port ([`AudienceApi`]) over the real client: domain types in, TikTok calls
//! out, and each client error turned into what the engine must do about it.

use std::path::Path;

use audience_core::digests::Digest;
use audience_core::identifiers::KeyKind;
use audience_core::sync::api::{
    Ack, ApiError, ApiErrorKind, AudienceApi, AudienceView, CallCounters, FileAction, MappingAction,
};
use secrecy::{ExposeSecret, SecretString};

use crate::{
    AccessToken, ApiResponse, CalculateType, ErrorAction, TikTokClient, TikTokError, UpdateAction,
};

/// TikTok cuts streaming audience names to this many characters.
const STREAM_NAME_CHARS: usize = 70;

/// [`AudienceApi`] over a [`TikTokClient`] (share one client per process: it holds the rate limiter).
#[derive(Debug, Clone)]
pub struct AudienceAdapter {
    client: TikTokClient,
}

impl AudienceAdapter {
    pub fn new(client: TikTokClient) -> Self {
        AudienceAdapter { client }
    }

    pub fn client(&self) -> &TikTokClient {
        &self.client
    }
}

pub fn calculate_type(key: KeyKind) -> CalculateType {
    match key {
        KeyKind::Email => CalculateType::EmailSha256,
        KeyKind::Phone => CalculateType::PhoneSha256,
        KeyKind::Idfa => CalculateType::IdfaSha256,
        KeyKind::Gaid => CalculateType::GaidSha256,
    }
}

/// The client already retried what it could: what is left is a decision for the engine.
pub fn api_error(e: TikTokError) -> ApiError {
    let kind = match e.action() {
        // An expired file path: the next run uploads its files afresh, so it is a run that gave up, not a bad file.
        ErrorAction::Retry | ErrorAction::RateLimited | ErrorAction::FileExpired => {
            ApiErrorKind::GaveUp
        }
        ErrorAction::OutcomeUnknown => ApiErrorKind::OutcomeUnknown,
        ErrorAction::ReconnectRequired => ApiErrorKind::ReconnectRequired,
        ErrorAction::NotFound => ApiErrorKind::NotFound,
        ErrorAction::NotEditable => ApiErrorKind::NotEditable,
        ErrorAction::Expired => ApiErrorKind::Expired,
        ErrorAction::NotReady => ApiErrorKind::NotReady,
        ErrorAction::FileRejected => ApiErrorKind::FileRejected,
        ErrorAction::InvalidRequest | ErrorAction::BatchTooLarge | ErrorAction::Configuration => {
            ApiErrorKind::Invalid
        }
    };
    ApiError {
        kind,
        endpoint: e.endpoint().to_string(),
        code: e.code(),
        message: e.message().to_string(),
        request_id: e.request_id().map(str::to_string),
    }
}

fn token(t: &SecretString) -> AccessToken {
    AccessToken::new(t.expose_secret().to_string())
}

fn ack<T>(r: ApiResponse<T>) -> Ack<T> {
    Ack {
        value: r.data,
        request_id: r.request_id,
    }
}

/// Whether a stored name is the name asked for, allowing for TikTok's cut of streaming names: its docs
/// cut names over 70 characters to 67 followed by "..." (a plain cut at 70 is accepted too).
fn same_name(stored: &str, wanted: &str) -> bool {
    if stored == wanted {
        return true;
    }
    if wanted.chars().count() <= STREAM_NAME_CHARS {
        return false;
    }
    let ellipsis = wanted
        .chars()
        .take(STREAM_NAME_CHARS - 3)
        .chain("...".chars());
    wanted.chars().take(STREAM_NAME_CHARS).eq(stored.chars()) || ellipsis.eq(stored.chars())
}

#[async_trait::async_trait]
impl AudienceApi for AudienceAdapter {
    async fn upload_digest_file(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        key: KeyKind,
        file: &Path,
    ) -> Result<Ack<String>, ApiError> {
        self.client
            .upload_file(&token(t), advertiser_id, calculate_type(key), file)
            .await
            .map(ack)
            .map_err(api_error)
    }

    async fn create_file_audience(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        name: &str,
        key: KeyKind,
        file_paths: &[String],
    ) -> Result<Ack<String>, ApiError> {
        self.client
            .create_audience(
                &token(t),
                advertiser_id,
                name,
                calculate_type(key),
                file_paths,
            )
            .await
            .map(ack)
            .map_err(api_error)
    }

    async fn update_file_audience(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
        action: FileAction,
        file_paths: &[String],
    ) -> Result<Ack<()>, ApiError> {
        let action = match action {
            FileAction::Append => UpdateAction::Append,
            FileAction::Remove => UpdateAction::Remove,
        };
        self.client
            .update_audience(&token(t), advertiser_id, audience_id, action, file_paths)
            .await
            .map(ack)
            .map_err(api_error)
    }

    async fn create_stream_audience(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        name: &str,
    ) -> Result<Ack<String>, ApiError> {
        self.client
            .create_segment_audience(&token(t), advertiser_id, name)
            .await
            .map(ack)
            .map_err(api_error)
    }

    async fn stream_mapping(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
        key: KeyKind,
        action: MappingAction,
        digests: &[Digest],
    ) -> Result<Ack<()>, ApiError> {
        let action = match action {
            MappingAction::Add => crate::MappingAction::Add,
            MappingAction::Delete => crate::MappingAction::Delete,
        };
        let hex: Vec<String> = digests.iter().map(Digest::to_hex).collect();
        let audiences = [audience_id.to_string()];
        self.client
            .segment_mapping(
                &token(t),
                advertiser_id,
                action,
                calculate_type(key).id_schema(),
                &audiences,
                &hex,
            )
            .await
            .map(|r| Ack {
                value: (),
                request_id: r.request_id,
            })
            .map_err(api_error)
    }

    async fn find_audiences_by_name(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        name: &str,
    ) -> Result<Ack<Vec<String>>, ApiError> {
        let r = self
            .client
            .list_audiences(&token(t), advertiser_id)
            .await
            .map_err(api_error)?;
        let ids = r
            .data
            .into_iter()
            .filter(|a| same_name(&a.name, name))
            .map(|a| a.audience_id)
            .collect();
        Ok(Ack {
            value: ids,
            request_id: r.request_id,
        })
    }

    async fn audience_status(
        &self,
        t: &SecretString,
        advertiser_id: &str,
        audience_id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError> {
        let ids = [audience_id.to_string()];
        match self
            .client
            .get_audiences(&token(t), advertiser_id, &ids)
            .await
        {
            Ok(r) => {
                let view = r
                    .data
                    .into_iter()
                    .map(|rec| rec.audience_details)
                    .find(|d| d.audience_id == audience_id)
                    .map(|d| AudienceView {
                        audience_id: d.audience_id,
                        name: d.name,
                        is_valid: d.is_valid,
                        cover_num: u64::try_from(d.cover_num).ok(),
                        is_expiring: d.is_expiring,
                        msg: d.msg.filter(|m| !m.is_empty()),
                    });
                Ok(Ack {
                    value: view,
                    request_id: r.request_id,
                })
            }
            Err(e) if e.action() == ErrorAction::NotFound => Ok(Ack {
                value: None,
                request_id: e.request_id().map(str::to_string),
            }),
            Err(e) => Err(api_error(e)),
        }
    }

    fn counters(&self) -> CallCounters {
        let s = self.client.stats();
        CallCounters {
            calls: s.calls,
            retries: s.retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_names_match_after_tiktoks_cut() {
        let long = "x".repeat(90);
        assert!(same_name(&"x".repeat(70), &long));
        assert!(same_name(&format!("{}...", "x".repeat(67)), &long));
        assert!(!same_name(&format!("{}...", "x".repeat(66)), &long));
        assert!(same_name("a", "a"));
        assert!(!same_name("a", "b"));
        assert!(!same_name(&"x".repeat(69), &long));
    }

    /// The engine stops taking calls while one more request (its full timeout) and the commit still fit.
    #[test]
    fn the_engine_deadline_margin_covers_a_request_and_the_commit() {
        let margin = audience_core::sync::EngineSettings::default().deadline_margin;
        let request = crate::ClientConfig::default().request_timeout;
        assert!(margin >= request + audience_core::sync::COMMIT_ALLOWANCE);
    }

    #[test]
    fn key_kinds_map_to_calculate_types() {
        assert_eq!(calculate_type(KeyKind::Gaid), CalculateType::GaidSha256);
        assert_eq!(
            calculate_type(KeyKind::Gaid).id_schema(),
            crate::IdSchema::AaidSha256
        );
        assert_eq!(calculate_type(KeyKind::Email).as_str(), "EMAIL_SHA256");
    }
}
