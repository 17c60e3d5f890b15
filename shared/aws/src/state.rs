//! `StateStore` on one DynamoDB table. Layout and conditions: `docs/table-design.md`.
//!
//! Records are stored as JSON (`rec_json`) plus the few top-level attributes that keys, the GSI, TTL or a
//! condition expression need. Attribute names contain `_` so none is a DynamoDB reserved word.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use audience_core::model::{
    Advertiser, ExportRef, Integration, IntegrationStatus, KeyMapping, Lease, OAuthState,
    PreviewRecord, RunLedger, SnapshotPointer, SyncConfig,
};
use audience_core::ports::{
    BudgetOutcome, CommitOutcome, ConsumedState, CreateSync, LeaseOutcome, PortError, RunPage,
    SaveMapping, StateStore,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, ReturnValue, TransactWriteItem, WriteRequest,
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{corrupt, unavailable};

pub(crate) type Item = HashMap<String, AttributeValue>;

const SERVICE: &str = "DynamoDB";
/// Name of the GSI that finds the syncs of a cohort id.
pub const GSI_COHORT: &str = "gsi1";
/// The TTL attribute (epoch seconds). DynamoDB deletes expired items eventually (up to days later), so every
/// expiry that matters is also checked in a condition expression.
pub const TTL_ATTRIBUTE: &str = "expire_at";

/// The StateStore adapter.
#[derive(Clone, Debug)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get_item(&self, pk: String, sk: &str) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(out.item)
    }

    /// Runs a query to the end (all pages).
    async fn query_all(
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

    async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), PortError> {
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

    async fn lease_state(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<Option<Lease>>, PortError> {
        Ok(self
            .get_item(project_pk(project_id), &sync_sk(sync_id))
            .await?
            .map(|item| lease_of(&item)))
    }
}

// --- keys ---

fn project_pk(project_id: &str) -> String {
    format!("PROJECT#{project_id}")
}
const INTEGRATION_SK: &str = "INTEGRATION";
fn sync_sk(sync_id: &str) -> String {
    format!("SYNC#{sync_id}")
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
fn runs_pk(sync_id: &str) -> String {
    format!("SYNC#{sync_id}")
}
fn run_sk(run_id: &str) -> String {
    format!("RUN#{run_id}")
}
fn oauth_pk(state: &str) -> String {
    format!("OAUTH#{state}")
}
const OAUTH_SK: &str = "OAUTH";
fn budget_pk(key: &str) -> String {
    format!("BUDGET#{key}")
}
fn budget_sk(day: NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}
fn preview_sk(preview_id: &str) -> String {
    format!("PREVIEW#{preview_id}")
}
fn cohort_gsi_pk(cohort_id: &str) -> String {
    format!("COHORT#{cohort_id}")
}

/// The newest export seen of a cohort (one item per cohort; `cohort::listing`).
fn seen_export_pk(cohort_id: &str) -> String {
    format!("EXPORTS#{cohort_id}")
}
const SEEN_EXPORT_SK: &str = "LATEST";

// --- attribute helpers ---

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

pub(crate) fn get_n(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

pub(crate) fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

fn to_json<T: Serialize>(v: &T) -> Result<String, PortError> {
    serde_json::to_string(v)
        .map_err(|e| PortError::Invalid(format!("cannot serialize record: {e}")))
}

fn from_json<T: DeserializeOwned>(item: &Item, name: &str, what: &str) -> Result<T, PortError> {
    let raw =
        get_s(item, name).ok_or_else(|| corrupt(format!("{what}: attribute {name} missing")))?;
    serde_json::from_str(raw).map_err(|e| corrupt(format!("{what}: {name}: {e}")))
}

fn opt_json<T: DeserializeOwned>(
    item: &Item,
    name: &str,
    what: &str,
) -> Result<Option<T>, PortError> {
    match get_s(item, name) {
        None => Ok(None),
        Some(_) => from_json(item, name, what).map(Some),
    }
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn ttl_after(t: DateTime<Utc>, d: Duration) -> i64 {
    t.timestamp() + d.as_secs() as i64
}

fn lease_of(item: &Item) -> Option<Lease> {
    Some(Lease {
        holder: get_s(item, "lease_holder")?.to_string(),
        expires_at: ms_to_time(get_n(item, "lease_until")?),
    })
}

fn chrono_ttl(ttl: Duration) -> Result<chrono::Duration, PortError> {
    chrono::Duration::from_std(ttl)
        .map_err(|_| PortError::Invalid("lease duration too long".into()))
}

fn decode_integration(project_id: &str, item: &Item) -> Result<Integration, PortError> {
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

fn encode_sync(sync: &SyncConfig, version: u64) -> Result<Item, PortError> {
    let mut core = sync.clone();
    // These have their own attributes and conditional calls.
    core.committed = None;
    core.pending_export = None;
    core.version = 0;
    let mut item = Item::new();
    item.insert("pk".into(), s(project_pk(&sync.project_id)));
    item.insert("sk".into(), s(sync_sk(&sync.sync_id)));
    item.insert("item_type".into(), s("sync"));
    item.insert("rec_json".into(), s(to_json(&core)?));
    item.insert("ver_no".into(), n(version as i64));
    item.insert("gsi1pk".into(), s(cohort_gsi_pk(&sync.cohort_id)));
    item.insert(
        "gsi1sk".into(),
        s(format!("{}#{}", project_pk(&sync.project_id), sync.sync_id)),
    );
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

fn decode_sync(item: &Item) -> Result<SyncConfig, PortError> {
    let mut sync: SyncConfig = from_json(item, "rec_json", "sync")?;
    sync.version = get_n(item, "ver_no").unwrap_or(0).max(0) as u64;
    sync.committed = opt_json(item, "committed_json", "sync")?;
    sync.pending_export = opt_json(item, "pending_json", "sync")?;
    Ok(sync)
}

fn validate_id(what: &str, id: &str) -> Result<(), PortError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(PortError::Invalid(format!(
            "{what} must be 1-128 characters of [A-Za-z0-9_-]"
        )));
    }
    Ok(())
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn get_integration(&self, project_id: &str) -> Result<Option<Integration>, PortError> {
        match self
            .get_item(project_pk(project_id), INTEGRATION_SK)
            .await?
        {
            None => Ok(None),
            Some(item) => decode_integration(project_id, &item).map(Some),
        }
    }

    async fn record_connection(
        &self,
        project_id: &str,
        advertisers: &[Advertiser],
        scope_ids: &[u32],
        now: DateTime<Utc>,
    ) -> Result<Integration, PortError> {
        validate_id("project id", project_id)?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(INTEGRATION_SK))
            .update_expression(
                "SET item_type = :t, integ_status = :st, advertisers_json = :a, scopes_json = :sc, \
                 connected_at = :now, updated_at = :now",
            )
            .expression_attribute_values(":t", s("integration"))
            .expression_attribute_values(":st", s(IntegrationStatus::Connected.as_str()))
            .expression_attribute_values(":a", s(to_json(&advertisers)?))
            .expression_attribute_values(":sc", s(to_json(&scope_ids)?))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        decode_integration(project_id, &out.attributes.unwrap_or_default())
    }

    async fn set_integration_status(
        &self,
        project_id: &str,
        status: IntegrationStatus,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(INTEGRATION_SK))
            .update_expression("SET integ_status = :st, updated_at = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                Err(PortError::NotFound(format!("integration of {project_id}")))
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn save_mapping(
        &self,
        project_id: &str,
        mapping: &KeyMapping,
        now: DateTime<Utc>,
    ) -> Result<SaveMapping, PortError> {
        let canonical = mapping.canonical();
        let fp = canonical.fingerprint();
        // Only the first mapping is ever written: a later identical one changes nothing (not even the
        // property's spelling), a different one is refused.
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(INTEGRATION_SK))
            .update_expression("SET mapping_json = :m, mapping_fp = :fp, updated_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(mapping_fp)")
            .expression_attribute_values(":m", s(to_json(&canonical)?))
            .expression_attribute_values(":fp", s(fp.clone()))
            .expression_attribute_values(":now", s(now.to_rfc3339()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(SaveMapping::Created),
            Err(e) if is_condition_failed(&e) => {
                let Some(item) = self
                    .get_item(project_pk(project_id), INTEGRATION_SK)
                    .await?
                else {
                    return Ok(SaveMapping::NotConnected);
                };
                match get_s(&item, "mapping_fp") {
                    Some(existing) if existing == fp => Ok(SaveMapping::Unchanged),
                    Some(_) => Ok(SaveMapping::Locked(from_json(
                        &item,
                        "mapping_json",
                        "mapping",
                    )?)),
                    // The mapping was deleted in between (disconnect): nothing to save it to.
                    None => Ok(SaveMapping::NotConnected),
                }
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn delete_integration(&self, project_id: &str) -> Result<(), PortError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(INTEGRATION_SK))
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(())
    }

    async fn put_oauth_state(&self, state: &OAuthState) -> Result<(), PortError> {
        validate_id("OAuth state", &state.state)?;
        validate_id("project id", &state.project_id)?;
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(oauth_pk(&state.state)))
            .item("sk", s(OAUTH_SK))
            .item("item_type", s("oauth_state"))
            .item("rec_json", s(to_json(state)?))
            .item("expires_ms", n(state.expires_at.timestamp_millis()))
            // Housekeeping only: the expiry that matters is checked in consume's condition.
            .item(
                TTL_ATTRIBUTE,
                n(ttl_after(state.expires_at, Duration::from_secs(3600))),
            )
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => {
                Err(PortError::Conflict("OAuth state exists".into()))
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn consume_oauth_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<ConsumedState, PortError> {
        // The callback is public: a value we could never have issued is unknown, without a round trip (and
        // without DynamoDB refusing an oversized key as a server error).
        if validate_id("OAuth state", state).is_err() {
            return Ok(ConsumedState::Unknown);
        }
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(oauth_pk(state)))
            .key("sk", s(OAUTH_SK))
            .condition_expression("attribute_exists(pk) AND expires_ms > :now")
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                Ok(ConsumedState::Consumed(from_json(
                    &item,
                    "rec_json",
                    "OAuth state",
                )?))
            }
            Err(e) if is_condition_failed(&e) => {
                if self.get_item(oauth_pk(state), OAUTH_SK).await?.is_none() {
                    return Ok(ConsumedState::Unknown);
                }
                // Expired: remove it now rather than waiting for TTL (best effort; it can never be consumed).
                let _ = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", s(oauth_pk(state)))
                    .key("sk", s(OAUTH_SK))
                    .send()
                    .await;
                Ok(ConsumedState::Expired)
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn create_sync(&self, sync: &SyncConfig) -> Result<CreateSync, PortError> {
        validate_id("sync id", &sync.sync_id)?;
        validate_id("project id", &sync.project_id)?;
        validate_id("cohort id", &sync.cohort_id)?;
        validate_id("advertiser id", &sync.advertiser_id)?;
        let item = encode_sync(sync, 1)?;
        let key_sk = sync_key_sk(sync)?;
        let put = |item: Item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| PortError::Invalid(e.to_string()))
        };
        let mut guard = Item::new();
        guard.insert("pk".into(), s(project_pk(&sync.project_id)));
        guard.insert("sk".into(), s(key_sk.clone()));
        guard.insert("item_type".into(), s("sync_key"));
        guard.insert("sync_id".into(), s(sync.sync_id.clone()));
        let res = self
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
                let guard = self.get_item(project_pk(&sync.project_id), &key_sk).await?;
                match guard.as_ref().and_then(|g| get_s(g, "sync_id")) {
                    Some(existing) if existing != sync.sync_id => {
                        match self.get_sync(&sync.project_id, existing).await? {
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

    async fn get_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<SyncConfig>, PortError> {
        match self
            .get_item(project_pk(project_id), &sync_sk(sync_id))
            .await?
        {
            None => Ok(None),
            Some(item) => decode_sync(&item).map(Some),
        }
    }

    async fn list_syncs(&self, project_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        let items = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :p)",
                vec![(":pk", s(project_pk(project_id))), (":p", s("SYNC#"))],
            )
            .await?;
        items.iter().map(decode_sync).collect()
    }

    async fn syncs_for_cohort(&self, cohort_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        let items = self
            .query_all(
                Some(GSI_COHORT),
                "gsi1pk = :g",
                vec![(":g", s(cohort_gsi_pk(cohort_id)))],
            )
            .await?;
        items.iter().map(decode_sync).collect()
    }

    async fn update_sync(&self, sync: &SyncConfig) -> Result<SyncConfig, PortError> {
        let item = encode_sync(sync, sync.version + 1)?;
        let get = |k: &str| item.get(k).cloned().unwrap_or(AttributeValue::Null(true));
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", get("pk"))
            .key("sk", get("sk"))
            .update_expression("SET rec_json = :r, ver_no = :new, gsi1pk = :g, gsi1sk = :gs")
            .condition_expression("ver_no = :old")
            .expression_attribute_values(":r", get("rec_json"))
            .expression_attribute_values(":new", n(sync.version as i64 + 1))
            .expression_attribute_values(":old", n(sync.version as i64))
            .expression_attribute_values(":g", get("gsi1pk"))
            .expression_attribute_values(":gs", get("gsi1sk"))
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

    async fn delete_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let runs = self
            .query_all(
                None,
                "pk = :pk AND begins_with(sk, :p)",
                vec![(":pk", s(runs_pk(sync_id))), (":p", s("RUN#"))],
            )
            .await?;
        let mut keys: Vec<Item> = runs
            .into_iter()
            .map(|mut it| {
                let mut k = Item::new();
                for name in ["pk", "sk"] {
                    if let Some(v) = it.remove(name) {
                        k.insert(name.to_string(), v);
                    }
                }
                k
            })
            .collect();
        let mut sync_key = Item::new();
        sync_key.insert("pk".into(), s(project_pk(project_id)));
        sync_key.insert("sk".into(), s(sync_sk(sync_id)));
        keys.push(sync_key);
        if let Some(sync) = self.get_sync(project_id, sync_id).await? {
            let guard_sk = sync_key_sk(&sync)?;
            // Only this sync's guard (a guard naming another sync id is not ours to remove).
            if let Some(guard) = self.get_item(project_pk(project_id), &guard_sk).await?
                && get_s(&guard, "sync_id") == Some(sync_id)
            {
                let mut k = Item::new();
                k.insert("pk".into(), s(project_pk(project_id)));
                k.insert("sk".into(), s(guard_sk));
                keys.push(k);
            }
        }
        self.batch_delete(keys).await
    }

    async fn acquire_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseOutcome, PortError> {
        let until = now + chrono_ttl(ttl)?;
        for _ in 0..3 {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(project_pk(project_id)))
                .key("sk", s(sync_sk(sync_id)))
                .update_expression("SET lease_holder = :h, lease_until = :u")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(lease_holder) OR lease_until <= :now \
                     OR lease_holder = :h)",
                )
                .expression_attribute_values(":h", s(holder))
                .expression_attribute_values(":u", n(until.timestamp_millis()))
                .expression_attribute_values(":now", n(now.timestamp_millis()))
                .send()
                .await;
            match res {
                Ok(_) => {
                    return Ok(LeaseOutcome::Acquired(Lease {
                        holder: holder.to_string(),
                        expires_at: ms_to_time(until.timestamp_millis()),
                    }));
                }
                Err(e) if is_condition_failed(&e) => {
                    match self.lease_state(project_id, sync_id).await? {
                        None => return Err(PortError::NotFound(format!("sync {sync_id}"))),
                        Some(Some(lease)) if lease.holder != holder && lease.expires_at > now => {
                            return Ok(LeaseOutcome::HeldBy(lease));
                        }
                        // Released or expired in between: try again.
                        Some(_) => continue,
                    }
                }
                Err(e) => return Err(unavailable(SERVICE, e)),
            }
        }
        Err(PortError::Conflict(format!(
            "lease of sync {sync_id} keeps changing"
        )))
    }

    async fn renew_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError> {
        let until = now + chrono_ttl(ttl)?;
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(sync_sk(sync_id)))
            .update_expression("SET lease_until = :u")
            .condition_expression("lease_holder = :h AND lease_until > :now")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":u", n(until.timestamp_millis()))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Some(Lease {
                holder: holder.to_string(),
                expires_at: ms_to_time(until.timestamp_millis()),
            })),
            Err(e) if is_condition_failed(&e) => Ok(None),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn release_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
    ) -> Result<bool, PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(sync_sk(sync_id)))
            .update_expression("REMOVE lease_holder, lease_until")
            .condition_expression("lease_holder = :h")
            .expression_attribute_values(":h", s(holder))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn commit_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        pointer: &SnapshotPointer,
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome, PortError> {
        let exported_ms = pointer.export.exported_at.timestamp_millis();
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(sync_sk(sync_id)))
            .update_expression("SET committed_json = :c, committed_ms = :ms")
            .condition_expression(
                "lease_holder = :h AND lease_until > :now AND \
                 (attribute_not_exists(committed_ms) OR committed_ms <= :ms)",
            )
            .expression_attribute_values(":c", s(to_json(pointer)?))
            .expression_attribute_values(":ms", n(exported_ms))
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(CommitOutcome::Committed),
            Err(e) if is_condition_failed(&e) => {
                let Some(item) = self
                    .get_item(project_pk(project_id), &sync_sk(sync_id))
                    .await?
                else {
                    return Err(PortError::NotFound(format!("sync {sync_id}")));
                };
                match lease_of(&item) {
                    Some(l) if l.holder == holder && l.expires_at > now => {}
                    _ => return Ok(CommitOutcome::LeaseLost),
                }
                match get_n(&item, "committed_ms") {
                    Some(ms) if ms > exported_ms => Ok(CommitOutcome::Stale {
                        committed_exported_at: ms_to_time(ms),
                    }),
                    _ => Err(PortError::Conflict(format!(
                        "snapshot pointer of sync {sync_id} changed"
                    ))),
                }
            }
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn set_pending_export(
        &self,
        project_id: &str,
        sync_id: &str,
        export: &ExportRef,
    ) -> Result<bool, PortError> {
        let ms = export.exported_at.timestamp_millis();
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(sync_sk(sync_id)))
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
                if self
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

    async fn latest_seen_export(&self, cohort_id: &str) -> Result<Option<ExportRef>, PortError> {
        match self
            .get_item(seen_export_pk(cohort_id), SEEN_EXPORT_SK)
            .await?
        {
            Some(item) => from_json(&item, "export_json", "seen export").map(Some),
            None => Ok(None),
        }
    }

    async fn note_seen_export(&self, cohort_id: &str, export: &ExportRef) -> Result<(), PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
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

    async fn take_pending_export(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ExportRef>, PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(project_pk(project_id)))
            .key("sk", s(sync_sk(sync_id)))
            .update_expression("REMOVE pending_json, pending_ms")
            .condition_expression("lease_holder = :h AND lease_until > :now")
            .expression_attribute_values(":h", s(holder))
            .expression_attribute_values(":now", n(now.timestamp_millis()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => opt_json(
                &out.attributes.unwrap_or_default(),
                "pending_json",
                "pending export",
            ),
            Err(e) if is_condition_failed(&e) => Err(PortError::Conflict(format!(
                "lease of sync {sync_id} is not held by the caller"
            ))),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn put_run(&self, run: &RunLedger) -> Result<(), PortError> {
        validate_id("run id", &run.run_id)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(runs_pk(&run.sync_id)))
            .item("sk", s(run_sk(&run.run_id)))
            .item("item_type", s("run"))
            .item("rec_json", s(to_json(run)?))
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(())
    }

    async fn get_run(&self, sync_id: &str, run_id: &str) -> Result<Option<RunLedger>, PortError> {
        match self.get_item(runs_pk(sync_id), &run_sk(run_id)).await? {
            None => Ok(None),
            Some(item) => from_json(&item, "rec_json", "run").map(Some),
        }
    }

    async fn list_runs(
        &self,
        sync_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<RunPage, PortError> {
        let limit = limit.clamp(1, 1000) as i32;
        let start = match cursor {
            None => None,
            Some(c) => {
                validate_id("cursor", c)?;
                let mut k = Item::new();
                k.insert("pk".into(), s(runs_pk(sync_id)));
                k.insert("sk".into(), s(run_sk(c)));
                Some(k)
            }
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(runs_pk(sync_id)))
            .expression_attribute_values(":p", s("RUN#"))
            .scan_index_forward(false)
            .limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        let runs = out
            .items
            .unwrap_or_default()
            .iter()
            .map(|it| from_json(it, "rec_json", "run"))
            .collect::<Result<Vec<RunLedger>, _>>()?;
        let next_cursor = out
            .last_evaluated_key
            .as_ref()
            .and_then(|k| get_s(k, "sk"))
            .and_then(|sk| sk.strip_prefix("RUN#"))
            .map(str::to_string);
        Ok(RunPage { runs, next_cursor })
    }

    async fn try_consume_daily_call(
        &self,
        audience_key: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<BudgetOutcome, PortError> {
        let day = now.date_naive();
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(budget_pk(audience_key)))
            .key("sk", s(budget_sk(day)))
            .update_expression("ADD call_count :one SET item_type = :t, expire_at = :ttl")
            .condition_expression("attribute_not_exists(call_count) OR call_count < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":t", s("daily_budget"))
            .expression_attribute_values(":limit", n(limit as i64))
            .expression_attribute_values(":ttl", n(ttl_after(now, Duration::from_secs(3 * 86_400))))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                let used = out
                    .attributes
                    .as_ref()
                    .and_then(|a| get_n(a, "call_count"))
                    .unwrap_or(0);
                Ok(BudgetOutcome::Granted { used: used as u32 })
            }
            Err(e) if is_condition_failed(&e) => Ok(BudgetOutcome::Exhausted {
                used: self.daily_calls_used(audience_key, day).await?,
            }),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn daily_calls_used(&self, audience_key: &str, day: NaiveDate) -> Result<u32, PortError> {
        Ok(self
            .get_item(budget_pk(audience_key), &budget_sk(day))
            .await?
            .and_then(|it| get_n(&it, "call_count"))
            .unwrap_or(0) as u32)
    }

    async fn put_preview(&self, preview: &PreviewRecord) -> Result<(), PortError> {
        validate_id("preview id", &preview.preview_id)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(project_pk(&preview.project_id)))
            .item("sk", s(preview_sk(&preview.preview_id)))
            .item("item_type", s("preview"))
            .item("rec_json", s(to_json(preview)?))
            .item(
                TTL_ATTRIBUTE,
                n(ttl_after(
                    preview.created_at,
                    Duration::from_secs(30 * 86_400),
                )),
            )
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(())
    }

    async fn get_preview(
        &self,
        project_id: &str,
        preview_id: &str,
    ) -> Result<Option<PreviewRecord>, PortError> {
        match self
            .get_item(project_pk(project_id), &preview_sk(preview_id))
            .await?
        {
            None => Ok(None),
            Some(item) => from_json(&item, "rec_json", "preview").map(Some),
        }
    }
}
