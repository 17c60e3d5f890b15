//! Creates the resources the adapters expect, with the same shape as the SAM template: for the tests and the
//! local stack (on AWS the template owns them). Each call is idempotent (an existing resource is fine).

use audience_core::ports::PortError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use crate::error::unavailable;
use crate::state::{GSI_COHORT, TTL_ATTRIBUTE};

fn invalid(e: impl std::fmt::Display) -> PortError {
    PortError::Invalid(e.to_string())
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, PortError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(invalid)
}

fn attr(name: &str) -> Result<AttributeDefinition, PortError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(invalid)
}

/// The state table: `pk`/`sk` strings, GSI `gsi1` (`gsi1pk`/`gsi1sk`, all attributes), on-demand, TTL on
/// `expire_at`. See `docs/table-design.md`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), PortError> {
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(GSI_COHORT)
        .key_schema(key("gsi1pk", KeyType::Hash)?)
        .key_schema(key("gsi1sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(invalid)?;
    let res = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("gsi1pk")?)
        .attribute_definitions(attr("gsi1sk")?)
        .global_secondary_indexes(gsi)
        .send()
        .await;
    match res {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(unavailable("DynamoDB", e)),
    }
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(invalid)?,
        )
        .send()
        .await
        .map_err(|e| unavailable("DynamoDB", e))?;
    Ok(())
}

/// A bucket with versioning on, as the template makes it (pointers name the snapshot version read back).
pub async fn create_bucket(client: &aws_sdk_s3::Client, bucket: &str) -> Result<(), PortError> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            }) => {}
        Err(e) => return Err(unavailable("S3", e)),
    }
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| unavailable("S3", e))?;
    Ok(())
}

pub async fn create_schedule_group(
    client: &aws_sdk_scheduler::Client,
    group: &str,
) -> Result<(), PortError> {
    match client.create_schedule_group().name(group).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conflict_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(unavailable("EventBridge Scheduler", e)),
    }
}
