//! Sync records (settings written by the API under an optimistic version), pending and seen exports, and
//! the sweeper's query.

use audience_core::model::{ExportRef, SyncConfig, ids};
use audience_core::ports::{CreateSync, PortError};
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, ReturnValue, TransactWriteItem, WriteRequest,
};
use chrono::{DateTime, Utc};

use super::codec::{
    cohort_gsi_pk, cohort_gsi_sk, decode_sync, encode_new_sync, from_json, settings_json, to_json,
};
use super::{
    DynamoStateStore, GSI_COHORT, Item, SERVICE, SYNC_SK_PREFIX, get_s, is_condition_failed, key,
    n, project_pk, s, sync_key, sync_sk,
};
use crate::error::unavailable;

impl DynamoStateStore {
    /// Runs a query to the end (all pages).
    pub(super) async fn query_all(
        &self,
        index: Option<&str>,
        key_condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<Item>, PortError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key_condition)
                .set_exclusive_start_key(start.take());
            if let Some(index) = index {
                q = q.index_name(index);
            } else {
                q = q.consistent_read(true);
            }
            for (k, v) in &values {
                q = q.expression_attribute_values(*k, v.clone());
            }
            let out = q.send().await.map_err(|e| unavailable(SERVICE, e))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }

    pub(super) async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), PortError> {
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    let del = DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map_err(|e| PortError::Invalid(e.to_string()))?;
                    Ok(WriteRequest::builder().delete_request(del).build())
                })
                .collect::<Result<_, PortError>>()?;
            let mut attempt = 0;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| unavailable(SERVICE, e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(PortError::Unavailable {
                            service: SERVICE,
                            message: "batch delete kept returning unprocessed items".into(),
                        });
                    }
                    tokio::time::sleep(crate::clients::backoff(attempt)).await;
                }
            }
        }
        Ok(())
    }
}

/// One per (cohort, advertiser, write mode) of a project: makes sync creation idempotent under concurrency.
fn sync_key_sk(sync: &SyncConfig) -> Result<String, PortError> {
    let mode =
        serde_json::to_value(sync.write_mode).map_err(|e| PortError::Invalid(e.to_string()))?;
    Ok(format!(
        "SYNCKEY#{}#{}#{}",
        sync.cohort_id,
        sync.advertiser_id,
        mode.as_str().unwrap_or_default()
    ))
}

/// The newest export seen of a cohort (one item per cohort; `cohort::listing`).
fn seen_export_pk(cohort_id: &str) -> String {
    format!("EXPORTS#{cohort_id}")
}
const SEEN_EXPORT_SK: &str = "LATEST";

pub(super) async fn create(
    st: &DynamoStateStore,
    sync: &SyncConfig,
) -> Result<CreateSync, PortError> {
    ids::check("sync id", &sync.sync_id)?;
    ids::check("project id", &sync.project_id)?;
    ids::check("cohort id", &sync.cohort_id)?;
    ids::check("advertiser id", &sync.advertiser_id)?;
    let item = encode_new_sync(sync)?;
    let key_sk = sync_key_sk(sync)?;
    let put = |item: Item| {
        Put::builder()
            .table_name(&st.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| PortError::Invalid(e.to_string()))
    };
    let mut guard = key(project_pk(&sync.project_id), key_sk.clone());
    guard.insert("item_type".into(), s("sync_key"));
    guard.insert("sync_id".into(), s(sync.sync_id.clone()));
    let res = st
        .client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(put(item)?).build())
        .transact_items(TransactWriteItem::builder().put(put(guard)?).build())
        .send()
        .await;
    match res {
        Ok(_) => {
            let mut stored = sync.clone();
            stored.version = 1;
            Ok(CreateSync::Created(stored))
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_transaction_canceled_exception()) =>
        {
            let guard = st.get_item(project_pk(&sync.project_id), &key_sk).await?;
            match guard.as_ref().and_then(|g| get_s(g, "sync_id")) {
                Some(existing) if existing != sync.sync_id => {
                    match get(st, &sync.project_id, existing).await? {
                        Some(found) => Ok(CreateSync::Exists(found)),
                        None => Err(PortError::Conflict(format!(
                            "sync {existing} for the same cohort and advertiser is being deleted"
                        ))),
                    }
                }
                _ => Err(PortError::Conflict(format!("sync {} exists", sync.sync_id))),
            }
        }
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn get(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<Option<SyncConfig>, PortError> {
    match st
        .get_item(project_pk(project_id), &sync_sk(sync_id))
        .await?
    {
        None => Ok(None),
        Some(item) => decode_sync(&item).map(Some),
    }
}

pub(super) async fn list(
    st: &DynamoStateStore,
    project_id: &str,
) -> Result<Vec<SyncConfig>, PortError> {
    let items = st
        .query_all(
            None,
            "pk = :pk AND begins_with(sk, :p)",
            vec![
                (":pk", s(project_pk(project_id))),
                (":p", s(SYNC_SK_PREFIX)),
            ],
        )
        .await?;
    items.iter().map(decode_sync).collect()
}

pub(super) async fn for_cohort(
    st: &DynamoStateStore,
    cohort_id: &str,
) -> Result<Vec<SyncConfig>, PortError> {
    let items = st
        .query_all(
            Some(GSI_COHORT),
            "gsi1pk = :g",
            vec![(":g", s(cohort_gsi_pk(cohort_id)))],
        )
        .await?;
    items.iter().map(decode_sync).collect()
}

/// Writes the settings only (`rec_json`, the version, the GSI keys): progress, pointer, pending export
/// and lease are other attributes, untouched.
pub(super) async fn update(
    st: &DynamoStateStore,
    sync: &SyncConfig,
) -> Result<SyncConfig, PortError> {
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
        .set_key(Some(sync_key(&sync.project_id, &sync.sync_id)))
        .update_expression("SET rec_json = :r, ver_no = :new, gsi1pk = :g, gsi1sk = :gs")
        .condition_expression("ver_no = :old")
        .expression_attribute_values(":r", s(settings_json(sync)?))
        .expression_attribute_values(":new", n(sync.version as i64 + 1))
        .expression_attribute_values(":old", n(sync.version as i64))
        .expression_attribute_values(":g", s(cohort_gsi_pk(&sync.cohort_id)))
        .expression_attribute_values(":gs", s(cohort_gsi_sk(sync)))
        .return_values(ReturnValue::AllNew)
        .send()
        .await;
    match res {
        Ok(out) => decode_sync(&out.attributes.unwrap_or_default()),
        Err(e) if is_condition_failed(&e) => Err(PortError::Conflict(format!(
            "sync {} changed since version {} (or is gone)",
            sync.sync_id, sync.version
        ))),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

/// The sync item (and its guard) go first: from then on no fenced write of a run can succeed (`put_run`
/// checks the sync item in its transaction), so the runs read afterwards are all there will ever be.
pub(super) async fn delete(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<(), PortError> {
    delete_items(st, project_id, sync_id).await?;
    // A missing sync still gets its runs removed: a delete that failed half-way is finished by a retry.
    delete_runs(st, sync_id).await
}

/// The sync item and its uniqueness guard (not its runs).
pub(super) async fn delete_items(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<(), PortError> {
    let mut keys = vec![sync_key(project_id, sync_id)];
    if let Some(sync) = get(st, project_id, sync_id).await? {
        let guard_sk = sync_key_sk(&sync)?;
        // Only this sync's guard (a guard naming another sync id is not ours to remove).
        if let Some(guard) = st.get_item(project_pk(project_id), &guard_sk).await?
            && get_s(&guard, "sync_id") == Some(sync_id)
        {
            keys.push(key(project_pk(project_id), guard_sk));
        }
    }
    st.batch_delete(keys).await
}

/// Every run ledger of a sync.
pub(super) async fn delete_runs(st: &DynamoStateStore, sync_id: &str) -> Result<(), PortError> {
    let runs = st
        .query_all(
            None,
            "pk = :pk AND begins_with(sk, :p)",
            vec![(":pk", s(super::runs::runs_pk(sync_id))), (":p", s("RUN#"))],
        )
        .await?;
    let run_keys = runs
        .into_iter()
        .filter_map(|mut it| match (it.remove("pk"), it.remove("sk")) {
            (Some(pk), Some(sk)) => Some(Item::from([("pk".into(), pk), ("sk".into(), sk)])),
            _ => None,
        })
        .collect();
    st.batch_delete(run_keys).await
}

pub(super) async fn set_pending_export(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
    export: &ExportRef,
) -> Result<bool, PortError> {
    let ms = export.exported_at.timestamp_millis();
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
        .set_key(Some(sync_key(project_id, sync_id)))
        .update_expression("SET pending_json = :p, pending_ms = :ms")
        .condition_expression(
            "attribute_exists(pk) AND (attribute_not_exists(pending_ms) OR pending_ms <= :ms) AND \
             (attribute_not_exists(committed_ms) OR committed_ms <= :ms)",
        )
        .expression_attribute_values(":p", s(to_json(export)?))
        .expression_attribute_values(":ms", n(ms))
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_condition_failed(&e) => {
            if st
                .get_item(project_pk(project_id), &sync_sk(sync_id))
                .await?
                .is_none()
            {
                return Err(PortError::NotFound(format!("sync {sync_id}")));
            }
            Ok(false)
        }
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn latest_seen_export(
    st: &DynamoStateStore,
    cohort_id: &str,
) -> Result<Option<ExportRef>, PortError> {
    match st
        .get_item(seen_export_pk(cohort_id), SEEN_EXPORT_SK)
        .await?
    {
        Some(item) => from_json(&item, "export_json", "seen export").map(Some),
        None => Ok(None),
    }
}

pub(super) async fn note_seen_export(
    st: &DynamoStateStore,
    cohort_id: &str,
    export: &ExportRef,
) -> Result<(), PortError> {
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
        .key("pk", s(seen_export_pk(cohort_id)))
        .key("sk", s(SEEN_EXPORT_SK))
        .update_expression("SET export_json = :e, exported_ms = :ms")
        .condition_expression("attribute_not_exists(exported_ms) OR exported_ms <= :ms")
        .expression_attribute_values(":e", s(to_json(export)?))
        .expression_attribute_values(":ms", n(export.exported_at.timestamp_millis()))
        .send()
        .await;
    match res {
        // A newer export is already remembered: nothing to do.
        Ok(_) => Ok(()),
        Err(e) if is_condition_failed(&e) => Ok(()),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

/// The sweeper's query: a Scan of sync items filtered on the top-level mirrors (`next_attempt_ms`,
/// `pending_ms`, the lease), every page until `limit` are found. Eventually consistent: the sweeper only
/// invokes resumes, and each resume takes the lease with a conditional write, so a stale answer costs an
/// invocation that finds nothing to do, never a second run.
pub(super) async fn due(
    st: &DynamoStateStore,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(String, String)>, PortError> {
    let mut found = Vec::new();
    let mut start: Option<Item> = None;
    while found.len() < limit {
        let out = st
            .client
            .scan()
            .table_name(&st.table)
            .filter_expression(
                "item_type = :t AND (next_attempt_ms <= :now OR attribute_exists(pending_ms)) AND \
                 (attribute_not_exists(lease_holder) OR lease_until <= :now)",
            )
            .projection_expression("pk, sk")
            .expression_attribute_values(":t", s("sync"))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .set_limit(st.scan_page_size)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        for item in out.items.unwrap_or_default() {
            let project = get_s(&item, "pk").and_then(|v| v.strip_prefix("PROJECT#"));
            let sync = get_s(&item, "sk").and_then(|v| v.strip_prefix(SYNC_SK_PREFIX));
            if let (Some(p), Some(id)) = (project, sync) {
                found.push((p.to_string(), id.to_string()));
            }
        }
        match out.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => break,
        }
    }
    found.truncate(limit);
    Ok(found)
}
