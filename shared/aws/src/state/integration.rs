//! The project's integration (connection, status, the immutable mapping) and single-use OAuth states.

use std::time::Duration;

use audience_core::model::{
    Advertiser, Integration, IntegrationStatus, KeyMapping, OAuthState, ids,
};
use audience_core::ports::{ConsumedState, PortError, SaveMapping};
use aws_sdk_dynamodb::types::ReturnValue;
use chrono::{DateTime, Utc};

use super::codec::{decode_integration, from_json, to_json};
use super::{
    DynamoStateStore, INTEGRATION_SK, SERVICE, TTL_ATTRIBUTE, get_s, is_condition_failed, n,
    project_pk, s, ttl_after,
};
use crate::error::unavailable;

fn oauth_pk(state: &str) -> String {
    format!("OAUTH#{state}")
}
const OAUTH_SK: &str = "OAUTH";

pub(super) async fn get(
    st: &DynamoStateStore,
    project_id: &str,
) -> Result<Option<Integration>, PortError> {
    match st.get_item(project_pk(project_id), INTEGRATION_SK).await? {
        None => Ok(None),
        Some(item) => decode_integration(project_id, &item).map(Some),
    }
}

/// A Scan filtered on `item_type`: integrations have no index of their own. A deployment holds a handful of
/// projects, and the console's project list is the only caller; every page of the Scan is read.
pub(super) async fn list(st: &DynamoStateStore) -> Result<Vec<Integration>, PortError> {
    let mut out = Vec::new();
    let mut start: Option<
        std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    > = None;
    loop {
        let page = st
            .client
            .scan()
            .table_name(&st.table)
            .filter_expression("item_type = :t AND sk = :sk")
            .expression_attribute_values(":t", s("integration"))
            .expression_attribute_values(":sk", s(INTEGRATION_SK))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        for item in page.items() {
            let Some(pk) = get_s(item, "pk") else {
                continue;
            };
            let Some(project_id) = pk.strip_prefix("PROJECT#") else {
                continue;
            };
            out.push(decode_integration(project_id, item)?);
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out.sort_by(|a, b| a.project_id.cmp(&b.project_id));
    Ok(out)
}

pub(super) async fn record_connection(
    st: &DynamoStateStore,
    project_id: &str,
    advertisers: &[Advertiser],
    scope_ids: &[u32],
    now: DateTime<Utc>,
) -> Result<Integration, PortError> {
    ids::check("project id", project_id)?;
    let out = st
        .client
        .update_item()
        .table_name(&st.table)
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

pub(super) async fn set_status(
    st: &DynamoStateStore,
    project_id: &str,
    status: IntegrationStatus,
    now: DateTime<Utc>,
) -> Result<(), PortError> {
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
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

pub(super) async fn save_mapping(
    st: &DynamoStateStore,
    project_id: &str,
    mapping: &KeyMapping,
    now: DateTime<Utc>,
) -> Result<SaveMapping, PortError> {
    let canonical = mapping.canonical();
    let fp = canonical.fingerprint();
    // Only the first mapping is ever written: a later identical one changes nothing (not even the
    // property's spelling), a different one is refused.
    let res = st
        .client
        .update_item()
        .table_name(&st.table)
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
            let Some(item) = st.get_item(project_pk(project_id), INTEGRATION_SK).await? else {
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

pub(super) async fn delete(st: &DynamoStateStore, project_id: &str) -> Result<(), PortError> {
    st.client
        .delete_item()
        .table_name(&st.table)
        .key("pk", s(project_pk(project_id)))
        .key("sk", s(INTEGRATION_SK))
        .send()
        .await
        .map_err(|e| unavailable(SERVICE, e))?;
    Ok(())
}

pub(super) async fn put_oauth_state(
    st: &DynamoStateStore,
    state: &OAuthState,
) -> Result<(), PortError> {
    ids::check("OAuth state", &state.state)?;
    ids::check("project id", &state.project_id)?;
    let res = st
        .client
        .put_item()
        .table_name(&st.table)
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
        Err(e) if is_condition_failed(&e) => Err(PortError::Conflict("OAuth state exists".into())),
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}

pub(super) async fn consume_oauth_state(
    st: &DynamoStateStore,
    state: &str,
    now: DateTime<Utc>,
) -> Result<ConsumedState, PortError> {
    // The callback is public: a value we could never have issued is unknown, without a round trip (and
    // without DynamoDB refusing an oversized key as a server error).
    if !ids::valid(state) {
        return Ok(ConsumedState::Unknown);
    }
    let res = st
        .client
        .delete_item()
        .table_name(&st.table)
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
            if st.get_item(oauth_pk(state), OAUTH_SK).await?.is_none() {
                return Ok(ConsumedState::Unknown);
            }
            // Expired: remove it now rather than waiting for TTL (best effort; it can never be consumed).
            let _ = st
                .client
                .delete_item()
                .table_name(&st.table)
                .key("pk", s(oauth_pk(state)))
                .key("sk", s(OAUTH_SK))
                .send()
                .await;
            Ok(ConsumedState::Expired)
        }
        Err(e) => Err(unavailable(SERVICE, e)),
    }
}
