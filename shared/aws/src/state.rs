//! `StateStore` on one DynamoDB table. Layout and conditions: `docs/table-design.md`.
//!
//! Records are stored as JSON plus the few top-level attributes that keys, the GSI, TTL, the sweeper's scan
//! or a condition expression need. Attribute names contain `_` so none is a DynamoDB reserved word. A sync is
//! one item with two owners kept in separate attributes: `rec_json` (settings, the API's, versioned by
//! `ver_no`) and `progress_json` (the engine's, fenced by `lease_fence`), so neither write can undo the other.
//!
//! The calls live in submodules by topic: [`integration`] (integrations, OAuth states), [`syncs`] (sync
//! records, pending and seen exports, the sweeper's query), [`leases`] (lease, fence and the engine's fenced
//! writes), [`runs`] (run ledgers, the daily budget, previews); [`codec`] maps records to items.

mod codec;
mod integration;
mod leases;
mod retired;
mod runs;
mod syncs;
mod unmatched;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use audience_core::cohort::unmatched::UnmatchedExport;
use audience_core::model::{
    Advertiser, ExportRef, Fence, Integration, IntegrationStatus, KeyMapping, Lease, OAuthState,
    PreviewRecord, RetiredSync, RunLedger, SnapshotPointer, SyncConfig, SyncProgress,
};
use audience_core::ports::{
    BudgetOutcome, CommitOutcome, ConsumedState, CreateSync, FinishOutcome, LeaseOutcome,
    PortError, RunPage, SaveMapping, StateStore,
};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, NaiveDate, Utc};

use crate::error::unavailable;

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
    /// Items evaluated per Scan page of the sweeper's query (DynamoDB's default: 1 MB of items).
    scan_page_size: Option<i32>,
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStateStore {
        DynamoStateStore {
            client,
            table: table.into(),
            scan_page_size: None,
        }
    }

    /// Small Scan pages exercise the sweeper query's pagination in tests.
    pub fn with_scan_page_size(mut self, items: i32) -> DynamoStateStore {
        self.scan_page_size = Some(items.max(1));
        self
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
}

// --- keys ---

fn project_pk(project_id: &str) -> String {
    format!("PROJECT#{project_id}")
}
const INTEGRATION_SK: &str = "INTEGRATION";
const SYNC_SK_PREFIX: &str = "SYNC#";
fn sync_sk(sync_id: &str) -> String {
    format!("{SYNC_SK_PREFIX}{sync_id}")
}
fn sync_key(project_id: &str, sync_id: &str) -> Item {
    key(project_pk(project_id), sync_sk(sync_id))
}
fn key(pk: String, sk: String) -> Item {
    Item::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

// --- attribute helpers ---

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A fence number as an attribute (fences stay far below `i64::MAX`: one per run).
fn fence_n(fence: u64) -> AttributeValue {
    AttributeValue::N(fence.to_string())
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

fn ttl_after(t: DateTime<Utc>, d: Duration) -> i64 {
    t.timestamp() + d.as_secs() as i64
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn get_integration(&self, project_id: &str) -> Result<Option<Integration>, PortError> {
        integration::get(self, project_id).await
    }

    async fn list_integrations(&self) -> Result<Vec<Integration>, PortError> {
        integration::list(self).await
    }

    async fn record_connection(
        &self,
        project_id: &str,
        advertisers: &[Advertiser],
        scope_ids: &[u32],
        now: DateTime<Utc>,
    ) -> Result<Integration, PortError> {
        integration::record_connection(self, project_id, advertisers, scope_ids, now).await
    }

    async fn set_integration_status(
        &self,
        project_id: &str,
        status: IntegrationStatus,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        integration::set_status(self, project_id, status, now).await
    }

    async fn save_mapping(
        &self,
        project_id: &str,
        mapping: &KeyMapping,
        now: DateTime<Utc>,
    ) -> Result<SaveMapping, PortError> {
        integration::save_mapping(self, project_id, mapping, now).await
    }

    async fn delete_integration(&self, project_id: &str) -> Result<(), PortError> {
        integration::delete(self, project_id).await
    }

    async fn put_oauth_state(&self, state: &OAuthState) -> Result<(), PortError> {
        integration::put_oauth_state(self, state).await
    }

    async fn consume_oauth_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<ConsumedState, PortError> {
        integration::consume_oauth_state(self, state, now).await
    }

    async fn create_sync(&self, sync: &SyncConfig) -> Result<CreateSync, PortError> {
        syncs::create(self, sync).await
    }

    async fn get_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<SyncConfig>, PortError> {
        syncs::get(self, project_id, sync_id).await
    }

    async fn list_syncs(&self, project_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        syncs::list(self, project_id).await
    }

    async fn syncs_for_cohort(&self, cohort_id: &str) -> Result<Vec<SyncConfig>, PortError> {
        syncs::for_cohort(self, cohort_id).await
    }

    async fn update_sync(&self, sync: &SyncConfig) -> Result<SyncConfig, PortError> {
        syncs::update(self, sync).await
    }

    async fn delete_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        syncs::delete(self, project_id, sync_id).await
    }

    async fn retire_sync(&self, retired: &RetiredSync) -> Result<(), PortError> {
        retired::retire(self, retired).await
    }

    async fn get_retired_sync(
        &self,
        project_id: &str,
        sync_id: &str,
    ) -> Result<Option<RetiredSync>, PortError> {
        retired::get(self, project_id, sync_id).await
    }

    async fn list_retired_syncs(&self, project_id: &str) -> Result<Vec<RetiredSync>, PortError> {
        retired::list(self, project_id).await
    }

    async fn delete_retired_sync(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        retired::delete(self, project_id, sync_id).await
    }

    async fn projects_with_history(&self) -> Result<Vec<String>, PortError> {
        retired::projects(self).await
    }

    async fn acquire_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        holder: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<LeaseOutcome, PortError> {
        leases::acquire(self, project_id, sync_id, holder, ttl, now).await
    }

    async fn take_over_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError> {
        leases::take_over(self, project_id, sync_id, fence, ttl, now).await
    }

    async fn renew_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<Lease>, PortError> {
        leases::renew(self, project_id, sync_id, fence, ttl, now).await
    }

    async fn release_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<bool, PortError> {
        leases::release(self, project_id, sync_id, fence).await
    }

    async fn finish_lease(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
    ) -> Result<FinishOutcome, PortError> {
        leases::finish(self, project_id, sync_id, fence).await
    }

    async fn commit_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        pointer: &SnapshotPointer,
        _now: DateTime<Utc>,
    ) -> Result<CommitOutcome, PortError> {
        leases::commit_snapshot(self, project_id, sync_id, fence, pointer).await
    }

    async fn save_progress(
        &self,
        project_id: &str,
        sync_id: &str,
        fence: &Fence,
        progress: &SyncProgress,
    ) -> Result<bool, PortError> {
        leases::save_progress(self, project_id, sync_id, fence, progress).await
    }

    async fn set_pending_export(
        &self,
        project_id: &str,
        sync_id: &str,
        export: &ExportRef,
    ) -> Result<bool, PortError> {
        syncs::set_pending_export(self, project_id, sync_id, export).await
    }

    async fn latest_seen_export(&self, cohort_id: &str) -> Result<Option<ExportRef>, PortError> {
        syncs::latest_seen_export(self, cohort_id).await
    }

    async fn note_seen_export(&self, cohort_id: &str, export: &ExportRef) -> Result<(), PortError> {
        syncs::note_seen_export(self, cohort_id, export).await
    }

    async fn syncs_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, PortError> {
        syncs::due(self, now, limit).await
    }

    async fn put_run(&self, fence: &Fence, run: &RunLedger) -> Result<bool, PortError> {
        runs::put(self, fence, run).await
    }

    async fn get_run(&self, sync_id: &str, run_id: &str) -> Result<Option<RunLedger>, PortError> {
        runs::get(self, sync_id, run_id).await
    }

    async fn list_runs(
        &self,
        sync_id: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<RunPage, PortError> {
        runs::list(self, sync_id, limit, cursor).await
    }

    async fn try_consume_daily_call(
        &self,
        audience_key: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<BudgetOutcome, PortError> {
        runs::try_consume_daily_call(self, audience_key, now, limit).await
    }

    async fn daily_calls_used(&self, audience_key: &str, day: NaiveDate) -> Result<u32, PortError> {
        runs::daily_calls_used(self, audience_key, day).await
    }

    async fn put_preview(&self, preview: &PreviewRecord) -> Result<(), PortError> {
        runs::put_preview(self, preview).await
    }

    async fn get_preview(
        &self,
        project_id: &str,
        preview_id: &str,
    ) -> Result<Option<PreviewRecord>, PortError> {
        runs::get_preview(self, project_id, preview_id).await
    }

    async fn record_unmatched_export(&self, export: &UnmatchedExport) -> Result<(), PortError> {
        unmatched::record(self, export).await
    }

    async fn list_unmatched_exports(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<UnmatchedExport>, PortError> {
        unmatched::list(self, now, limit).await
    }
}
