//! Request enums and response data of the endpoints the client uses. All ids are `String`s (TikTok's
//! ids are 64-bit and its fragments type them as strings); responses that carry a number anyway are read
//! leniently.

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::AccessToken;

/// Hash type of a customer file (`calculate_type` of `file/upload/` and `create/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CalculateType {
    #[serde(rename = "EMAIL_SHA256")]
    EmailSha256,
    #[serde(rename = "PHONE_SHA256")]
    PhoneSha256,
    #[serde(rename = "IDFA_SHA256")]
    IdfaSha256,
    #[serde(rename = "GAID_SHA256")]
    GaidSha256,
}

impl CalculateType {
    pub fn as_str(self) -> &'static str {
        match self {
            CalculateType::EmailSha256 => "EMAIL_SHA256",
            CalculateType::PhoneSha256 => "PHONE_SHA256",
            CalculateType::IdfaSha256 => "IDFA_SHA256",
            CalculateType::GaidSha256 => "GAID_SHA256",
        }
    }
    /// The streaming API's name for the same key (GAID is `AAID_SHA256` there).
    pub fn id_schema(self) -> IdSchema {
        match self {
            CalculateType::EmailSha256 => IdSchema::EmailSha256,
            CalculateType::PhoneSha256 => IdSchema::PhoneSha256,
            CalculateType::IdfaSha256 => IdSchema::IdfaSha256,
            CalculateType::GaidSha256 => IdSchema::AaidSha256,
        }
    }
}

/// Key type of a `segment/mapping/` position (`id_schema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IdSchema {
    #[serde(rename = "EMAIL_SHA256")]
    EmailSha256,
    #[serde(rename = "PHONE_SHA256")]
    PhoneSha256,
    #[serde(rename = "IDFA_SHA256")]
    IdfaSha256,
    #[serde(rename = "AAID_SHA256")]
    AaidSha256,
}

impl IdSchema {
    pub fn as_str(self) -> &'static str {
        match self {
            IdSchema::EmailSha256 => "EMAIL_SHA256",
            IdSchema::PhoneSha256 => "PHONE_SHA256",
            IdSchema::IdfaSha256 => "IDFA_SHA256",
            IdSchema::AaidSha256 => "AAID_SHA256",
        }
    }
}

/// `action` of `dmp/custom_audience/update/`. Always sent: TikTok's default when it is omitted is REPLACE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum UpdateAction {
    Append,
    Remove,
    Replace,
}

impl UpdateAction {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateAction::Append => "APPEND",
            UpdateAction::Remove => "REMOVE",
            UpdateAction::Replace => "REPLACE",
        }
    }
}

/// `action` of `segment/mapping/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingAction {
    Add,
    Delete,
}

impl MappingAction {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingAction::Add => "add",
            MappingAction::Delete => "delete",
        }
    }
}

/// A successful call: the data plus TikTok's `request_id` and `code` (0, 20001 partial, 40050 duplicate).
#[derive(Debug, Clone)]
pub struct ApiResponse<T> {
    pub data: T,
    pub request_id: Option<String>,
    pub code: i64,
    pub message: String,
}

impl<T> ApiResponse<T> {
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> ApiResponse<U> {
        ApiResponse {
            data: f(self.data),
            request_id: self.request_id,
            code: self.code,
            message: self.message,
        }
    }
}

/// Accepts an id as a JSON string or number.
pub(crate) fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(i128),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

pub(crate) fn id_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "id_string")] String);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "id_string")] String);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

/// `oauth2/access_token/` data.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenGrant {
    pub access_token: AccessToken,
    #[serde(default, deserialize_with = "id_strings")]
    pub advertiser_ids: Vec<String>,
    #[serde(default)]
    pub scope: Vec<i64>,
}

/// One item of `oauth2/advertiser/get/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthorizedAdvertiser {
    #[serde(deserialize_with = "id_string")]
    pub advertiser_id: String,
    #[serde(default)]
    pub advertiser_name: String,
}

/// One item of `advertiser/info/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AdvertiserInfo {
    #[serde(deserialize_with = "id_string")]
    pub advertiser_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// `user/info/` data (only what the liveness check needs; no personal data kept).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserInfo {
    #[serde(default, deserialize_with = "opt_id")]
    pub core_user_id: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `audience_details` of `dmp/custom_audience/get/` (and the items of `list/`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudienceDetails {
    #[serde(deserialize_with = "id_string")]
    pub audience_id: String,
    #[serde(default)]
    pub name: String,
    /// TikTok's `type` ("Customer File", "Partner", ...).
    #[serde(rename = "type", default)]
    pub audience_type: Option<String>,
    #[serde(default)]
    pub calculate_type: Option<String>,
    /// Matched users (0 while under 1,000 or still calculating).
    #[serde(default)]
    pub cover_num: i64,
    #[serde(default)]
    pub is_valid: bool,
    #[serde(default)]
    pub is_expiring: bool,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default)]
    pub expired_time: Option<String>,
}

/// One entry of `audience_history`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudienceHistory {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub action_detail: Option<String>,
    #[serde(default)]
    pub editor: Option<String>,
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub opt_time: Option<String>,
}

/// One item of `dmp/custom_audience/get/`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AudienceRecord {
    pub audience_details: AudienceDetails,
    #[serde(default)]
    pub audience_history: Vec<AudienceHistory>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PageInfo {
    #[serde(default)]
    pub page: u64,
    #[serde(default)]
    pub page_size: u64,
    #[serde(default)]
    pub total_number: u64,
    #[serde(default)]
    pub total_page: u64,
}

/// One `segment/mapping/` request the client sent while splitting a large call.
#[derive(Debug, Clone, PartialEq)]
pub struct MappingBatch {
    pub users: usize,
    pub request_id: Option<String>,
}
