//! The lease and its fence, and the engine's fenced writes (snapshot pointer, progress, pending hand-off).
//!
//! Attributes on the sync item: `lease_holder`, `lease_until` (ms) are removed on release; `lease_fence`
//! stays (fences only grow: `ADD lease_fence :one` on every grant and hand-over). A write "under a fence" is
//! conditioned on [`FENCED`]: the fence is still the sync's newest and its holder has not released it
//! (expired is fine: nobody was granted it since, or the fence would have moved).

use std::time::Duration;

use audience_core::model::{Fence, Lease, SnapshotPointer, SyncProgress};
use audience_core::ports::{CommitOutcome, FinishOutcome, LeaseOutcome, PortError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use super::codec::{fence_of, lease_of, ms_to_time, next_attempt_ms, opt_json, to_json};
use super::{
    DynamoStateStore, Item, SERVICE, fence_n, get_n, is_condition_failed, n, project_pk, s,
    sync_key, sync_sk,
};
use crate::error::unavailable;

/// The caller's grant is the sync's newest and unreleased (`:f`, `:h` from [`fenced`]).
const FENCED: &str = "lease_fence = :f AND lease_holder = :h";

fn chrono_ttl(ttl: Duration) -> Result<chrono::Duration, PortError> {
    chrono::Duration::from_std(ttl)
        .map_err(|_| PortError::Invalid("lease duration too long".into()))
}

/// An UpdateItem on the sync item with the fence's values bound.
fn fenced(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
) -> UpdateItemFluentBuilder {
    st.client
        .update_item()
        .table_name(&st.table)
        .set_key(Some(sync_key(project_id, sync_id)))
        .expression_attribute_values(":f", fence_n(fence.fence))
        .expression_attribute_values(":h", s(fence.holder.clone()))
}

fn is_fenced_by(item: &Item, fence: &Fence) -> bool {
    fence_of(item) == fence.fence && lease_of(item).is_some_and(|l| l.holder == fence.holder)
}

/// The new fence from an `UPDATED_NEW` answer.
fn granted_fence(attributes: Option<&Item>) -> Result<u64, PortError> {
    attributes
        .and_then(|a| get_n(a, "lease_fence"))
        .map(|f| f.max(0) as u64)
        .ok_or_else(|| crate::error::corrupt("lease grant answered without its fence"))
}

async fn sync_item(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<Option<Item>, PortError> {
    st.get_item(project_pk(project_id), &sync_sk(sync_id)).await
}

pub(super) async fn acquire(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<LeaseOutcome, PortError> {
    let until = now + chrono_ttl(ttl)?;
    for _ in 0..3 {
        let res = st
            .client
            .update_item()
            .table_name(&st.table)
            .set_key(Some(sync_key(project_id, sync_id)))
            .update_expression("SET lease_holder = :h, lease_until = :u ADD lease_fence :one")
            // Never while a lease is live, not even the caller's own: a continuation takes it over.
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(lease_holder) OR lease_until <= :now)",
            )
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":u", n(until.timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                return Ok(LeaseOutcome::Acquired(Lease {
                    holder: holder.to_string(),
                    expires_at: ms_to_time(until.timestamp_millis()),
                    fence: granted_fence(out.attributes.as_ref())?,
                }));
            }
            Err(e) if is_condition_failed(&e) => {
                match sync_item(st, project_id, sync_id).await? {
                    None => return Err(PortError::NotFound(format!("sync {sync_id}"))),
                    Some(item) => match lease_of(&item) {
                        Some(lease) if lease.expires_at > now => {
                            return Ok(LeaseOutcome::HeldBy(lease));
                        }
                        // Released or expired in between: try again.
                        _ => continue,
                    },
                }
            }
            Err(e) => return Err(unavailable(SERVICE, e)),
        }
    }
    Err(PortError::Conflict(format!(
        "lease of sync {sync_id} keeps changing"
    )))
}

pub(super) async fn take_over(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Lease>, PortError> {
    let until = now + chrono_ttl(ttl)?;
    // The fence moves with the hand-over: of two deliveries of one continuation only the first matches.
    let res = fenced(st, project_id, sync_id, fence)
        .update_expression("SET lease_until = :u ADD lease_fence :one")
        .condition_expression(FENCED)
        .expression_attribute_values(":u", n(until.timestamp_millis()))
        .expression_attribute_values(":one", n(1))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await;
    match res {
        Ok(out) => Ok(Some(Lease {
            holder: fence.holder.clone(),
            expires_at: ms_to_time(until.timestamp_millis()),
            fence: granted_fence(out.attributes.as_ref())?,
        })),
        Err(e) if is_condition_failed(&e) => Ok(None),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn renew(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Lease>, PortError> {
    let until = now + chrono_ttl(ttl)?;
    let res = fenced(st, project_id, sync_id, fence)
        .update_expression("SET lease_until = :u")
        .condition_expression(FENCED)
        .expression_attribute_values(":u", n(until.timestamp_millis()))
        .send()
        .await;
    match res {
        Ok(_) => Ok(Some(Lease {
            holder: fence.holder.clone(),
            expires_at: ms_to_time(until.timestamp_millis()),
            fence: fence.fence,
        })),
        Err(e) if is_condition_failed(&e) => Ok(None),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn release(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
) -> Result<bool, PortError> {
    let res = fenced(st, project_id, sync_id, fence)
        .update_expression("REMOVE lease_holder, lease_until")
        .condition_expression(FENCED)
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

/// Release only if nothing is pending (one conditional write, so an export recorded at the same moment
/// fails the release instead of being left behind); else take the pending export and keep the lease.
pub(super) async fn finish(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
) -> Result<FinishOutcome, PortError> {
    for _ in 0..4 {
        let released = fenced(st, project_id, sync_id, fence)
            .update_expression("REMOVE lease_holder, lease_until")
            .condition_expression(format!("{FENCED} AND attribute_not_exists(pending_ms)"))
            .send()
            .await;
        match released {
            Ok(_) => return Ok(FinishOutcome::Released),
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(unavailable(SERVICE, e)),
        }
        let taken = fenced(st, project_id, sync_id, fence)
            .update_expression("REMOVE pending_json, pending_ms")
            .condition_expression(format!("{FENCED} AND attribute_exists(pending_ms)"))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match taken {
            Ok(out) => {
                let old = out.attributes.unwrap_or_default();
                return match opt_json(&old, "pending_json", "pending export")? {
                    Some(p) => Ok(FinishOutcome::Pending(p)),
                    None => Err(crate::error::corrupt(format!(
                        "sync {sync_id}: pending_ms without pending_json"
                    ))),
                };
            }
            Err(e) if is_condition_failed(&e) => {}
            Err(e) => return Err(unavailable(SERVICE, e)),
        }
        // Both refused: fenced out, or the pending slot changed between the two writes.
        match sync_item(st, project_id, sync_id).await? {
            Some(item) if is_fenced_by(&item, fence) => continue,
            _ => return Ok(FinishOutcome::Fenced),
        }
    }
    Err(PortError::Conflict(format!(
        "pending export of sync {sync_id} keeps changing"
    )))
}

pub(super) async fn commit_snapshot(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
    pointer: &SnapshotPointer,
) -> Result<CommitOutcome, PortError> {
    let exported_ms = pointer.export.exported_at.timestamp_millis();
    let res = fenced(st, project_id, sync_id, fence)
        .update_expression("SET committed_json = :c, committed_ms = :ms")
        .condition_expression(format!(
            "{FENCED} AND (attribute_not_exists(committed_ms) OR committed_ms <= :ms)"
        ))
        .expression_attribute_values(":c", s(to_json(pointer)?))
        .expression_attribute_values(":ms", n(exported_ms))
        .send()
        .await;
    match res {
        Ok(_) => Ok(CommitOutcome::Committed),
        Err(e) if is_condition_failed(&e) => {
            let Some(item) = sync_item(st, project_id, sync_id).await? else {
                return Ok(CommitOutcome::LeaseLost);
            };
            if !is_fenced_by(&item, fence) {
                return Ok(CommitOutcome::LeaseLost);
            }
            match get_n(&item, "committed_ms") {
                Some(ms) if ms > exported_ms => Ok(CommitOutcome::Stale {
                    committed_exported_at: ms_to_time(ms),
                }),
                // The pointer only moves forward and only under this fence: unreachable but for a bug.
                _ => Err(PortError::Conflict(format!(
                    "snapshot pointer of sync {sync_id} changed"
                ))),
            }
        }
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

/// Writes `progress_json` whole, with its `next_attempt_ms` mirror for the sweeper.
pub(super) async fn save_progress(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    fence: &Fence,
    progress: &SyncProgress,
) -> Result<bool, PortError> {
    let mut req = fenced(st, project_id, sync_id, fence)
        .condition_expression(FENCED)
        .expression_attribute_values(":p", s(to_json(progress)?));
    req = match next_attempt_ms(progress) {
        Some(ms) => req
            .update_expression("SET progress_json = :p, next_attempt_ms = :next")
            .expression_attribute_values(":next", n(ms)),
        None => req.update_expression("SET progress_json = :p REMOVE next_attempt_ms"),
    };
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => Ok(false),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}
