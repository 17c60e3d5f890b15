//! Run ledgers (written under the run's fence, never rewritten once finished), TikTok's daily call budget
//! and previews.

use std::time::Duration;

use audience_core::model::{Fence, PreviewRecord, RunLedger, RunState, ids};
use audience_core::ports::{BudgetOutcome, PortError, RunPage};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, ReturnValue, TransactWriteItem};
use chrono::{DateTime, NaiveDate, Utc};

use super::codec::{from_json, to_json};
use super::{
    DynamoStateStore, Item, SERVICE, TTL_ATTRIBUTE, fence_n, get_n, get_s, is_condition_failed,
    key, n, project_pk, s, sync_key, ttl_after,
};
use crate::error::unavailable;

pub(super) fn runs_pk(sync_id: &str) -> String {
    format!("SYNC#{sync_id}")
}
fn run_sk(run_id: &str) -> String {
    format!("RUN#{run_id}")
}
fn budget_pk(key: &str) -> String {
    format!("BUDGET#{key}")
}
fn budget_sk(day: NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}
fn preview_sk(preview_id: &str) -> String {
    format!("PREVIEW#{preview_id}")
}

/// `run_state` as stored (the ledger's state, top level for the never-rewrite-a-finished-ledger condition).
fn state_str(state: RunState) -> Result<String, PortError> {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(v)) => Ok(v),
        _ => Err(PortError::Invalid(format!("run state {state:?}"))),
    }
}

/// One transaction: a ConditionCheck that the caller's fence is the sync's (so the sync exists: a run of a
/// deleted sync leaves no record) and the Put of the ledger unless the stored one is finished.
pub(super) async fn put(
    st: &DynamoStateStore,
    fence: &Fence,
    run: &RunLedger,
) -> Result<bool, PortError> {
    ids::check("run id", &run.run_id)?;
    ids::check("project id", &run.project_id)?;
    ids::check("sync id", &run.sync_id)?;
    let check = ConditionCheck::builder()
        .table_name(&st.table)
        .set_key(Some(sync_key(&run.project_id, &run.sync_id)))
        .condition_expression("lease_fence = :f AND lease_holder = :h")
        .expression_attribute_values(":f", fence_n(fence.fence))
        .expression_attribute_values(":h", s(fence.holder.clone()))
        .build()
        .map_err(|e| PortError::Invalid(e.to_string()))?;
    let mut item: Item = key(runs_pk(&run.sync_id), run_sk(&run.run_id));
    item.insert("item_type".into(), s("run"));
    item.insert("rec_json".into(), s(to_json(run)?));
    item.insert("run_state".into(), s(state_str(run.state)?));
    // An item without run_state predates this rule: treated as finished (never rewritten).
    let put = Put::builder()
        .table_name(&st.table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(pk) OR run_state = :running")
        .expression_attribute_values(":running", s(state_str(RunState::Running)?))
        .build()
        .map_err(|e| PortError::Invalid(e.to_string()))?;
    let res = st
        .client
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().condition_check(check).build())
        .transact_items(TransactWriteItem::builder().put(put).build())
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(c))
                if c.cancellation_reasons()
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
            {
                Ok(false)
            }
            // Cancelled for another reason (a concurrent transaction on the item): retryable.
            Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                Err(PortError::Conflict(format!(
                    "run {} ledger write cancelled: {}",
                    run.run_id,
                    c.message().unwrap_or("transaction cancelled")
                )))
            }
            _ => Err(unavailable(SERVICE, e)),
        },
    }
}

pub(super) async fn get(
    st: &DynamoStateStore,
    sync_id: &str,
    run_id: &str,
) -> Result<Option<RunLedger>, PortError> {
    match st.get_item(runs_pk(sync_id), &run_sk(run_id)).await? {
        None => Ok(None),
        Some(item) => from_json(&item, "rec_json", "run").map(Some),
    }
}

pub(super) async fn list(
    st: &DynamoStateStore,
    sync_id: &str,
    limit: u32,
    cursor: Option<&str>,
) -> Result<RunPage, PortError> {
    let limit = limit.clamp(1, 1000) as i32;
    let start = match cursor {
        None => None,
        Some(c) => {
            ids::check("cursor", c)?;
            Some(key(runs_pk(sync_id), run_sk(c)))
        }
    };
    let out = st
        .client
        .query()
        .table_name(&st.table)
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

pub(super) async fn try_consume_daily_call(
    st: &DynamoStateStore,
    audience_key: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<BudgetOutcome, PortError> {
    let day = now.date_naive();
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
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
            used: daily_calls_used(st, audience_key, day).await?,
        }),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn daily_calls_used(
    st: &DynamoStateStore,
    audience_key: &str,
    day: NaiveDate,
) -> Result<u32, PortError> {
    Ok(st
        .get_item(budget_pk(audience_key), &budget_sk(day))
        .await?
        .and_then(|it| get_n(&it, "call_count"))
        .unwrap_or(0) as u32)
}

pub(super) async fn put_preview(
    st: &DynamoStateStore,
    preview: &PreviewRecord,
) -> Result<(), PortError> {
    ids::check("preview id", &preview.preview_id)?;
    st.client
        .put_item()
        .table_name(&st.table)
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

pub(super) async fn get_preview(
    st: &DynamoStateStore,
    project_id: &str,
    preview_id: &str,
) -> Result<Option<PreviewRecord>, PortError> {
    match st
        .get_item(project_pk(project_id), &preview_sk(preview_id))
        .await?
    {
        None => Ok(None),
        Some(item) => from_json(&item, "rec_json", "preview").map(Some),
    }
}
