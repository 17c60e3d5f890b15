//! Records <-> items: JSON attributes, the sync item's split (settings / progress / pointer / pending /
//! lease), and the top-level mirrors conditions and the sweeper's scan read.

use audience_core::model::{Integration, IntegrationStatus, Lease, SyncConfig, SyncProgress};
use audience_core::ports::PortError;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Item, get_n, get_s, n, project_pk, s, sync_sk};
use crate::error::corrupt;

/// Fields of `SyncConfig` that are not settings: each has its own attribute and conditional call, so
/// `rec_json` never carries a copy that an API write could put back.
const NOT_SETTINGS: [&str; 4] = ["progress", "committed", "pending_export", "version"];

pub(super) fn to_json<T: Serialize>(v: &T) -> Result<String, PortError> {
    serde_json::to_string(v)
        .map_err(|e| PortError::Invalid(format!("cannot serialize record: {e}")))
}

pub(super) fn from_json<T: DeserializeOwned>(
    item: &Item,
    name: &str,
    what: &str,
) -> Result<T, PortError> {
    let raw =
        get_s(item, name).ok_or_else(|| corrupt(format!("{what}: attribute {name} missing")))?;
    serde_json::from_str(raw).map_err(|e| corrupt(format!("{what}: {name}: {e}")))
}

pub(super) fn opt_json<T: DeserializeOwned>(
    item: &Item,
    name: &str,
    what: &str,
) -> Result<Option<T>, PortError> {
    match get_s(item, name) {
        None => Ok(None),
        Some(_) => from_json(item, name, what).map(Some),
    }
}

pub(super) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The live or expired lease; `None` once released (the fence stays behind: fences only grow).
pub(super) fn lease_of(item: &Item) -> Option<Lease> {
    Some(Lease {
        holder: get_s(item, "lease_holder")?.to_string(),
        expires_at: ms_to_time(get_n(item, "lease_until")?),
        fence: fence_of(item),
    })
}

/// The last fence granted (0: never leased, or a lease from before fences).
pub(super) fn fence_of(item: &Item) -> u64 {
    get_n(item, "lease_fence").unwrap_or(0).max(0) as u64
}

pub(super) fn decode_integration(project_id: &str, item: &Item) -> Result<Integration, PortError> {
    let what = "integration";
    let status = match get_s(item, "integ_status") {
        Some("connected") => IntegrationStatus::Connected,
        Some("reconnect_required") => IntegrationStatus::ReconnectRequired,
        Some("not_connected") | None => IntegrationStatus::NotConnected,
        Some(other) => return Err(corrupt(format!("integration status {other:?}"))),
    };
    let parse_time = |name: &str| -> Result<Option<DateTime<Utc>>, PortError> {
        get_s(item, name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| corrupt(format!("{what}: {name}: {e}")))
            })
            .transpose()
    };
    Ok(Integration {
        project_id: project_id.to_string(),
        status,
        advertisers: opt_json(item, "advertisers_json", what)?.unwrap_or_default(),
        scope_ids: opt_json(item, "scopes_json", what)?.unwrap_or_default(),
        mapping: opt_json(item, "mapping_json", what)?,
        connected_at: parse_time("connected_at")?,
        updated_at: parse_time("updated_at")?.unwrap_or(DateTime::<Utc>::MIN_UTC),
    })
}

/// The settings as stored in `rec_json`.
pub(super) fn settings_json(sync: &SyncConfig) -> Result<String, PortError> {
    let mut v = serde_json::to_value(sync)
        .map_err(|e| PortError::Invalid(format!("cannot serialize sync: {e}")))?;
    if let serde_json::Value::Object(m) = &mut v {
        for k in NOT_SETTINGS {
            m.remove(k);
        }
    }
    to_json(&v)
}

/// `next_attempt_ms`: the top-level mirror of `progress.next_attempt_at` the sweeper's scan filters on.
pub(super) fn next_attempt_ms(progress: &SyncProgress) -> Option<i64> {
    progress.next_attempt_at.map(|t| t.timestamp_millis())
}

pub(super) fn cohort_gsi_pk(cohort_id: &str) -> String {
    format!("COHORT#{cohort_id}")
}

pub(super) fn cohort_gsi_sk(sync: &SyncConfig) -> String {
    format!("{}#{}", project_pk(&sync.project_id), sync.sync_id)
}

/// The whole sync item of a new sync (its first version).
pub(super) fn encode_new_sync(sync: &SyncConfig) -> Result<Item, PortError> {
    let mut item = Item::new();
    item.insert("pk".into(), s(project_pk(&sync.project_id)));
    item.insert("sk".into(), s(sync_sk(&sync.sync_id)));
    item.insert("item_type".into(), s("sync"));
    item.insert("rec_json".into(), s(settings_json(sync)?));
    item.insert("ver_no".into(), n(1));
    item.insert("gsi1pk".into(), s(cohort_gsi_pk(&sync.cohort_id)));
    item.insert("gsi1sk".into(), s(cohort_gsi_sk(sync)));
    item.insert("progress_json".into(), s(to_json(&sync.progress)?));
    if let Some(ms) = next_attempt_ms(&sync.progress) {
        item.insert("next_attempt_ms".into(), n(ms));
    }
    if let Some(c) = &sync.committed {
        item.insert("committed_json".into(), s(to_json(c)?));
        item.insert(
            "committed_ms".into(),
            n(c.export.exported_at.timestamp_millis()),
        );
    }
    if let Some(p) = &sync.pending_export {
        item.insert("pending_json".into(), s(to_json(p)?));
        item.insert("pending_ms".into(), n(p.exported_at.timestamp_millis()));
    }
    Ok(item)
}

pub(super) fn decode_sync(item: &Item) -> Result<SyncConfig, PortError> {
    let mut sync: SyncConfig = from_json(item, "rec_json", "sync")?;
    sync.version = get_n(item, "ver_no").unwrap_or(0).max(0) as u64;
    sync.progress = match opt_json(item, "progress_json", "sync progress")? {
        Some(p) => p,
        // An item written before the settings/progress split kept the engine's fields (same names) in
        // rec_json: read them from there rather than forget the sync's audience id.
        None => from_json(item, "rec_json", "sync progress (legacy)")?,
    };
    sync.committed = opt_json(item, "committed_json", "sync")?;
    sync.pending_export = opt_json(item, "pending_json", "sync")?;
    Ok(sync)
}
