//! The sandbox's public data: apps, fault settings, the request log, and how a digest "matches".

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdvertiserSpec {
    pub advertiser_id: String,
    pub advertiser_name: String,
}

/// A developer app registered with the sandbox (`POST /_sandbox/apps`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AppSpec {
    pub app_id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub advertisers: Vec<AdvertiserSpec>,
    /// What a token's `scope` lists (3 stands for 30 and 31).
    pub scopes: Vec<i64>,
    /// TikTok allow-lists apps for the streaming API; others get 40118 on `segment/*`.
    #[serde(default)]
    pub streaming_allowed: bool,
    /// When set, `oauth2/advertiser/get/` answers 40001 unless the token's scopes cover it.
    #[serde(default)]
    pub advertiser_get_scope: Option<i64>,
}

impl AppSpec {
    pub fn advertiser_ids(&self) -> Vec<String> {
        self.advertisers
            .iter()
            .map(|a| a.advertiser_id.clone())
            .collect()
    }

    /// A registered URI matches exactly, or by prefix when it ends in `*`.
    pub fn accepts_redirect(&self, uri: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|r| match r.strip_suffix('*') {
                Some(prefix) => uri.starts_with(prefix),
                None => r == uri,
            })
    }
}

/// Fault settings (`POST /_sandbox/faults`). Missing fields take their defaults (no faults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Share of requests answered with one of `codes` ∪ `http_errors` and not applied.
    pub rate: f64,
    /// Envelope codes (HTTP 200) to answer with.
    pub codes: Vec<i64>,
    /// HTTP statuses answered without an envelope (HTML body).
    pub http_errors: Vec<u16>,
    pub latency_ms: u64,
    /// Share of requests whose connection is dropped before anything is applied.
    pub drop_before_apply_rate: f64,
    /// Share of requests applied and then dropped (the "outcome unknown" case).
    pub drop_after_apply_rate: f64,
    /// Only these paths get faults (all `/open_api/` paths when absent).
    pub paths: Option<Vec<String>>,
    pub seed: Option<u64>,
}

impl FaultConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("rate", self.rate),
            ("drop_before_apply_rate", self.drop_before_apply_rate),
            ("drop_after_apply_rate", self.drop_after_apply_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be within [0, 1]"));
            }
        }
        if self.rate > 0.0 && self.codes.is_empty() && self.http_errors.is_empty() {
            return Err("rate > 0 needs at least one of codes or http_errors".into());
        }
        if let Some(s) = self.http_errors.iter().find(|s| !(400..600).contains(*s)) {
            return Err(format!("http error {s} is not a 4xx/5xx status"));
        }
        Ok(())
    }
}

/// One line of `GET /_sandbox/requests`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub ts_ms: u64,
    pub method: String,
    pub path: String,
    pub app_id: Option<String>,
    pub advertiser_id: Option<String>,
    pub audience_id: Option<String>,
    pub action: Option<String>,
    pub ids: usize,
    pub ids_sha256: String,
    pub file_paths: Vec<String>,
    pub http_status: Option<u16>,
    pub code: Option<i64>,
    pub fault: Option<String>,
    pub applied: bool,
}

/// The "batch identity" of a request: SHA-256 hex over its ids, sorted, each followed by `\n`.
pub fn ids_sha256(ids: &[String]) -> String {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for id in sorted {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Whether a digest "matches" a TikTok user: decided by the digest's own bytes so it is stable across runs.
pub fn digest_matches(digest: &str, match_rate: f64) -> bool {
    let bytes: Vec<u8> = match hex::decode(digest) {
        Ok(b) if b.len() >= 4 => b,
        _ => Sha256::digest(digest.as_bytes()).to_vec(),
    };
    let v = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (v as f64) < match_rate * 4_294_967_296.0
}
