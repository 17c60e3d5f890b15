//! The JSON shapes the API answers (documented in `docs/openapi.yaml`). Built field by field so that a
//! change to a stored record never changes the API by accident, and engine-only fields (checkpoints, leases,
//! snapshot pointers) never leak out.

use audience_core::model::{ChangeCounts, Integration, KeyMapping, RunLedger, SyncConfig};
use serde_json::{Value, json};

fn counts(c: &ChangeCounts) -> Value {
    json!({"planned": c.planned, "applied": c.applied, "held": c.held, "deferred": c.deferred})
}

fn enum_str<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Run JSON.
pub fn run_json(r: &RunLedger) -> Value {
    json!({
        "run_id": r.run_id,
        "sync_id": r.sync_id,
        "trigger": enum_str(&r.trigger),
        "source_export": r.source_export,
        "state": enum_str(&r.state),
        "reason": r.reason,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "rows": r.rows,
        "valid": r.valid,
        "unique": r.unique,
        "duplicates": r.duplicates,
        "skipped": r.skipped,
        "adds": counts(&r.adds),
        "removes": counts(&r.removes),
        "tiktok_calls": r.tiktok_calls,
        "tiktok_request_ids": r.tiktok_request_ids,
        "uncertain_resent": r.uncertain_resent,
        "uncertain_left": r.uncertain_left,
        "audience_size": r.audience_size,
        "matched_users": r.matched,
    })
}

/// Sync JSON (every sync route).
pub fn sync_json(s: &SyncConfig) -> Value {
    let audience_size = s.committed.as_ref().map(|c| c.digests);
    let matched = s.progress.tiktok_status.as_ref().and_then(|t| t.cover_num);
    let match_rate = match (matched, audience_size) {
        (Some(m), Some(n)) if n > 0 => Some(m as f64 / n as f64),
        _ => None,
    };
    json!({
        "sync_id": s.sync_id,
        "project_id": s.project_id,
        "cohort_id": s.cohort_id,
        "advertiser_id": s.advertiser_id,
        // The TikTok audience's name (the user's, or the default, with the `[as:<sync id>]` suffix the
        // engine finds it by); PATCH `audience_name` changes it.
        "audience_name": audience_core::sync::engine::audience_name(s),
        "cadence": enum_str(&s.cadence),
        "write_mode": enum_str(&s.write_mode),
        // What the sync is doing (paused, active, or completed once a one-time sync applied its export).
        "state": enum_str(&s.effective_state()),
        "max_removal_ratio": s.max_removal_ratio,
        "min_create_size": s.min_create_size,
        "tiktok_audience_id": s.progress.tiktok_audience_id,
        "tiktok_status": s.progress.tiktok_status.as_ref().map(|t| json!({
            "is_valid": t.is_valid,
            "cover_num": t.cover_num,
            "is_expiring": t.is_expiring,
            "msg": t.msg,
            "checked_at": t.checked_at,
        })),
        "waiting_for_minimum": s.progress.waiting_for_minimum,
        "held_removals": s.progress.held_removals,
        "held_adds": s.progress.held_adds,
        "deferred": s.progress.deferred,
        "pending_export": s.pending_export.as_ref().map(|e| e.s3_key.clone()),
        "last_run": s.progress.last_run.as_ref().map(run_json),
        "warnings": s.warnings,
        "notices": s.progress.notices,
        "uncertain": s.progress.uncertain.as_ref().map(|u| u.digests).unwrap_or(0),
        "active_run": s.progress.active_run,
        "next_attempt_at": s.progress.next_attempt_at,
        // Digests the audience holds (the committed base), TikTok's matched users, and matched / sent.
        "audience_size": audience_size,
        "matched_users": matched,
        "match_rate": match_rate,
    })
}

pub fn mapping_json(m: &KeyMapping) -> Value {
    json!({
        "amplitude_property": m.amplitude_property,
        "tiktok_key": m.tiktok_key.as_str(),
        "default_phone_region": m.default_phone_region,
    })
}

/// `GET .../integration`: a project never connected (or disconnected) is `not_connected`, not 404.
pub fn integration_json(project_id: &str, i: Option<&Integration>, syncs: usize) -> Value {
    match i {
        None => json!({
            "project_id": project_id,
            "status": "not_connected",
            "advertisers": [],
            "advertiser_names_known": true,
            "notice": null,
            "scopes": [],
            "mapping": null,
            "syncs": syncs,
        }),
        Some(i) => {
            // An empty name means TikTok did not list the account at connect (`oauth2/advertiser/get/` refused,
            // usually for want of the ad-account read permission): the id came from the grant itself.
            let unnamed = i
                .advertisers
                .iter()
                .filter(|a| a.advertiser_name.is_empty())
                .count();
            let notice = (unnamed > 0).then(|| {
                format!(
                    "{unnamed} ad account name(s) unknown: TikTok did not list them at connect (the app may lack \
                     the ad-account read permission); syncs work, reconnect after granting it to see names"
                )
            });
            json!({
                "project_id": project_id,
                "status": i.status.as_str(),
                "advertisers": i.advertisers.iter().map(|a| json!({
                    "advertiser_id": a.advertiser_id,
                    "advertiser_name": a.advertiser_name,
                    "name_known": !a.advertiser_name.is_empty(),
                })).collect::<Vec<_>>(),
                "advertiser_names_known": unnamed == 0,
                "notice": notice,
                "scopes": i.scope_ids,
                "mapping": i.mapping.as_ref().map(mapping_json),
                "syncs": syncs,
            })
        }
    }
}
