//! Unmatched exports: one item per S3 key in one partition, replaced on a repeat, expired by TTL.

use audience_core::cohort::unmatched::UnmatchedExport;
use audience_core::ports::PortError;
use chrono::{DateTime, Utc};

use super::codec::{from_json, to_json};
use super::{DynamoStateStore, Item, SERVICE, TTL_ATTRIBUTE, n, s};
use crate::error::unavailable;

const UNMATCHED_PK: &str = "UNMATCHED";
/// At most this many items are read per listing: the partition is bounded by the TTL and one item per key,
/// and the cap keeps a flood of misnamed files from making the API slow.
const MAX_READ: usize = 5_000;

fn unmatched_sk(key: &str) -> String {
    format!("KEY#{key}")
}

pub(super) async fn record(st: &DynamoStateStore, e: &UnmatchedExport) -> Result<(), PortError> {
    st.client
        .put_item()
        .table_name(&st.table)
        .item("pk", s(UNMATCHED_PK))
        .item("sk", s(unmatched_sk(&e.key)))
        .item("item_type", s("unmatched_export"))
        .item("rec_json", s(to_json(e)?))
        .item("seen_ms", n(e.seen_at.timestamp_millis()))
        .item(TTL_ATTRIBUTE, n(e.expires_at().timestamp()))
        .send()
        .await
        .map_err(|err| unavailable(SERVICE, err))?;
    Ok(())
}

pub(super) async fn list(
    st: &DynamoStateStore,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<UnmatchedExport>, PortError> {
    let mut all = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = st
            .client
            .query()
            .table_name(&st.table)
            .key_condition_expression("pk = :pk")
            // TTL deletes late: what expired is filtered out here.
            .filter_expression("expire_at > :now")
            .expression_attribute_values(":pk", s(UNMATCHED_PK))
            .expression_attribute_values(":now", n(now.timestamp()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|err| unavailable(SERVICE, err))?;
        for item in out.items() {
            all.push(from_json::<UnmatchedExport>(
                item,
                "rec_json",
                "unmatched export",
            )?);
        }
        start = out.last_evaluated_key;
        if start.is_none() || all.len() >= MAX_READ {
            break;
        }
    }
    all.sort_by(|a, b| b.seen_at.cmp(&a.seen_at).then_with(|| a.key.cmp(&b.key)));
    all.truncate(limit);
    Ok(all)
}
