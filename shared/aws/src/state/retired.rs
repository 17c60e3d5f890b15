//! Syncs a disconnect retired while keeping their run history: one marker item per sync
//! (`PROJECT#<project>` / `RETIRED#<sync>`); the run ledgers stay in their own partition.

use audience_core::model::{RetiredSync, ids};
use audience_core::ports::PortError;

use super::codec::{from_json, to_json};
use super::{DynamoStateStore, Item, SERVICE, get_s, key, project_pk, s};
use crate::error::unavailable;

const RETIRED_SK_PREFIX: &str = "RETIRED#";
const ITEM_TYPE: &str = "retired_sync";

fn retired_sk(sync_id: &str) -> String {
    format!("{RETIRED_SK_PREFIX}{sync_id}")
}

pub(super) async fn retire(st: &DynamoStateStore, r: &RetiredSync) -> Result<(), PortError> {
    ids::check("sync id", &r.sync_id)?;
    st.client
        .put_item()
        .table_name(&st.table)
        .item("pk", s(project_pk(&r.project_id)))
        .item("sk", s(retired_sk(&r.sync_id)))
        .item("item_type", s(ITEM_TYPE))
        .item("rec_json", s(to_json(r)?))
        .send()
        .await
        .map_err(|e| unavailable(SERVICE, e))?;
    // After the marker: a failure from here leaves both, and the retry ends with the marker alone.
    super::syncs::delete_items(st, &r.project_id, &r.sync_id).await
}

pub(super) async fn get(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<Option<RetiredSync>, PortError> {
    if !ids::valid(sync_id) {
        return Ok(None);
    }
    match st
        .get_item(project_pk(project_id), &retired_sk(sync_id))
        .await?
    {
        None => Ok(None),
        Some(item) => from_json(&item, "rec_json", "retired sync").map(Some),
    }
}

pub(super) async fn list(
    st: &DynamoStateStore,
    project_id: &str,
) -> Result<Vec<RetiredSync>, PortError> {
    let items = st
        .query_all(
            None,
            "pk = :pk AND begins_with(sk, :p)",
            vec![
                (":pk", s(project_pk(project_id))),
                (":p", s(RETIRED_SK_PREFIX)),
            ],
        )
        .await?;
    items
        .iter()
        .map(|it| from_json(it, "rec_json", "retired sync"))
        .collect()
}

pub(super) async fn delete(
    st: &DynamoStateStore,
    project_id: &str,
    sync_id: &str,
) -> Result<(), PortError> {
    ids::check("sync id", sync_id)?;
    // Runs first: a failure half-way leaves the marker, so the history can still be listed and deleted.
    super::syncs::delete_runs(st, sync_id).await?;
    st.batch_delete(vec![key(project_pk(project_id), retired_sk(sync_id))])
        .await
}

/// A Scan of marker items (keys only): few projects disconnect with history, and the table is scanned the
/// same way for `list_integrations`.
pub(super) async fn projects(st: &DynamoStateStore) -> Result<Vec<String>, PortError> {
    let mut out = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let page = st
            .client
            .scan()
            .table_name(&st.table)
            .filter_expression("item_type = :t")
            .expression_attribute_values(":t", s(ITEM_TYPE))
            .projection_expression("pk")
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        for item in page.items() {
            if let Some(p) = get_s(item, "pk").and_then(|pk| pk.strip_prefix("PROJECT#")) {
                out.push(p.to_string());
            }
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
