//! `CohortStore` on S3: Amplitude's exports under the cohort prefix (read-only to us), snapshots and JSON
//! reports under their own prefixes.
//!
//! Key layout (prefixes from `Config`):
//! - exports: `<cohort_prefix>/<anything>/[<integer>_]<cohortID>_<timestamp>_<difftype>[_<routingkey>].csv[.gz]`
//!   (raw keys; listed by cohort, see `audience_core::cohort::listing`)
//! - snapshot: `<snapshot_prefix>/<project_id>/<sync_id>/<name>.snapshot`, one key per snapshot named by the
//!   caller and never overwritten: an uncommitted write cannot make the committed snapshot a noncurrent
//!   version (which a lifecycle rule could expire). The pointer still names the version read back.
//! - run report: `<report_prefix>/<project_id>/<sync_id>/runs/<run_id>.json`
//! - preview report: `<report_prefix>/<project_id>/previews/<preview_id>.json`

use std::path::Path;

use async_trait::async_trait;
use audience_core::cohort::listing::{ListStep, is_newer, list_steps};
use audience_core::cohort::naming::parse_export_key;
use audience_core::cohort::unmatched;
use audience_core::model::SnapshotRef;
use audience_core::ports::{
    CohortStore, ExportObject, ObjectMeta, ObjectReader, PortError, check_snapshot_name,
};
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use tokio_util::io::SyncIoBridge;

use crate::config::join_key;
use crate::error::{corrupt, unavailable};
use crate::s3_versions::Versions;

const SERVICE: &str = "S3";

#[derive(Clone, Debug)]
pub struct S3CohortStore {
    client: Client,
    bucket: String,
    cohort_prefix: String,
    snapshot_prefix: String,
    report_prefix: String,
    list_page_size: Option<i32>,
    /// Keys returned by listings (what the cost of finding exports grows with).
    listed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn size_of(len: Option<i64>) -> u64 {
    len.unwrap_or(0).max(0) as u64
}

impl S3CohortStore {
    pub fn new(
        client: Client,
        bucket: impl Into<String>,
        cohort_prefix: impl Into<String>,
        snapshot_prefix: impl Into<String>,
        report_prefix: impl Into<String>,
    ) -> S3CohortStore {
        S3CohortStore {
            client,
            bucket: bucket.into(),
            cohort_prefix: cohort_prefix.into().trim_matches('/').to_string(),
            snapshot_prefix: snapshot_prefix.into().trim_matches('/').to_string(),
            report_prefix: report_prefix.into().trim_matches('/').to_string(),
            list_page_size: None,
            listed: Default::default(),
        }
    }

    /// Keys per listing page (S3's default is 1000); small pages exercise pagination in tests.
    pub fn with_list_page_size(mut self, keys: i32) -> S3CohortStore {
        self.list_page_size = Some(keys.max(1));
        self
    }

    /// Keys returned by this store's listings so far.
    pub fn listed_keys(&self) -> u64 {
        self.listed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn versions(&self) -> Versions<'_> {
        Versions {
            client: &self.client,
            bucket: &self.bucket,
        }
    }

    pub fn snapshot_key(&self, project_id: &str, sync_id: &str, name: &str) -> String {
        join_key(&[
            &self.snapshot_prefix,
            project_id,
            sync_id,
            &format!("{name}.snapshot"),
        ])
    }

    pub fn run_report_key(&self, project_id: &str, sync_id: &str, run_id: &str) -> String {
        join_key(&[
            &self.report_prefix,
            project_id,
            sync_id,
            "runs",
            &format!("{run_id}.json"),
        ])
    }

    pub fn preview_report_key(&self, project_id: &str, preview_id: &str) -> String {
        join_key(&[
            &self.report_prefix,
            project_id,
            "previews",
            &format!("{preview_id}.json"),
        ])
    }

    /// The newest export of the cohort among the keys of one listing step (all its pages).
    async fn newest_in(
        &self,
        cohort_id: &str,
        step: &ListStep,
    ) -> Result<Option<ExportObject>, PortError> {
        let mut best: Option<ExportObject> = None;
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&step.prefix)
            .set_start_after(step.start_after.clone())
            .set_max_keys(self.list_page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| unavailable(SERVICE, e))?;
            self.listed.fetch_add(
                page.contents().len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                // Listed keys are raw: parsed as they are, never URL-decoded.
                let name = match parse_export_key(key) {
                    Ok(n) => n,
                    Err(e) => {
                        unmatched::record(&e, "listing");
                        continue;
                    }
                };
                let candidate = ExportObject {
                    meta: ObjectMeta {
                        key: key.to_string(),
                        etag: obj.e_tag().map(str::to_string),
                        size: size_of(obj.size()),
                        last_modified: to_chrono(obj.last_modified()),
                        version_id: None,
                    },
                    name,
                };
                if is_newer(cohort_id, &candidate, best.as_ref()) {
                    best = Some(candidate);
                }
            }
        }
        Ok(best)
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<ObjectReader, PortError> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            // A version id that is gone (a deleted snapshot) answers NoSuchVersion, not NoSuchKey.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_key() || s.code() == Some("NoSuchVersion")) =>
            {
                return Err(PortError::NotFound(format!("s3://{}/{key}", self.bucket)));
            }
            Err(e) => return Err(unavailable(SERVICE, e)),
        };
        let meta = ObjectMeta {
            key: key.to_string(),
            etag: out.e_tag.clone(),
            size: size_of(out.content_length),
            last_modified: to_chrono(out.last_modified.as_ref()),
            version_id: out.version_id.clone(),
        };
        // The body streams from the connection as it is read (hyper's flow control): memory stays at a few
        // buffered chunks whatever the object size.
        let reader = Box::pin(out.body.into_async_read());
        let body = SyncIoBridge::new_with_handle(reader, tokio::runtime::Handle::current());
        Ok(ObjectReader {
            meta,
            body: Box::new(body),
        })
    }

    async fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<String, PortError> {
        let body =
            serde_json::to_vec_pretty(value).map_err(|e| PortError::Invalid(e.to_string()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(key.to_string())
    }
}

#[async_trait]
impl CohortStore for S3CohortStore {
    async fn newest_existing_export(
        &self,
        cohort_id: &str,
        seen: Option<&str>,
    ) -> Result<Option<ExportObject>, PortError> {
        let (first, then) = list_steps(&self.cohort_prefix, cohort_id, seen);
        if let Some(found) = self.newest_in(cohort_id, &first).await? {
            return Ok(Some(found));
        }
        match then {
            Some(step) => self.newest_in(cohort_id, &step).await,
            None => Ok(None),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, PortError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_string(),
                etag: out.e_tag,
                size: size_of(out.content_length),
                last_modified: to_chrono(out.last_modified.as_ref()),
                version_id: out.version_id,
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(unavailable(SERVICE, e)),
        }
    }

    async fn open(&self, key: &str) -> Result<ObjectReader, PortError> {
        self.get(key, None).await
    }

    async fn put_snapshot(
        &self,
        project_id: &str,
        sync_id: &str,
        name: &str,
        file: &Path,
    ) -> Result<SnapshotRef, PortError> {
        check_snapshot_name(name)?;
        let key = self.snapshot_key(project_id, sync_id, name);
        let size = tokio::fs::metadata(file)
            .await
            .map_err(|e| PortError::Invalid(format!("snapshot file {}: {e}", file.display())))?
            .len();
        // Streamed from disk: a 10M-digest snapshot (320 MB) is never in memory.
        let body = ByteStream::from_path(file)
            .await
            .map_err(|e| PortError::Invalid(format!("snapshot file {}: {e}", file.display())))?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        Ok(SnapshotRef {
            key,
            version_id: out.version_id,
            etag: out.e_tag,
            size,
        })
    }

    async fn open_snapshot(&self, snapshot: &SnapshotRef) -> Result<ObjectReader, PortError> {
        let reader = self
            .get(&snapshot.key, snapshot.version_id.as_deref())
            .await?;
        if let (Some(want), Some(got)) = (&snapshot.etag, &reader.meta.etag)
            && want != got
        {
            return Err(corrupt(format!(
                "snapshot {} changed (ETag {got}, expected {want})",
                snapshot.key
            )));
        }
        Ok(reader)
    }

    async fn delete_snapshot(&self, snapshot: &SnapshotRef) -> Result<(), PortError> {
        // Only a snapshot key of this store: a ref read from the state table never deletes an export.
        let under = format!("{}/", self.snapshot_prefix);
        if !snapshot.key.starts_with(&under) || !snapshot.key.ends_with(".snapshot") {
            return Err(PortError::Invalid(format!(
                "{} is not a snapshot key under {under}",
                snapshot.key
            )));
        }
        // Every version of the key, not only the ref's: a PUT retried after a lost answer leaves two.
        self.versions()
            .delete(&snapshot.key, Some(&snapshot.key))
            .await
    }

    async fn put_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        self.put_json(&self.run_report_key(project_id, sync_id, run_id), report)
            .await
    }

    async fn delete_run_report(
        &self,
        project_id: &str,
        sync_id: &str,
        run_id: &str,
    ) -> Result<(), PortError> {
        let key = self.run_report_key(project_id, sync_id, run_id);
        self.versions().delete(&key, Some(&key)).await
    }

    async fn put_preview_report(
        &self,
        project_id: &str,
        preview_id: &str,
        report: &serde_json::Value,
    ) -> Result<String, PortError> {
        self.put_json(&self.preview_report_key(project_id, preview_id), report)
            .await
    }

    async fn get_report(&self, key: &str) -> Result<Option<serde_json::Value>, PortError> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(unavailable(SERVICE, e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| unavailable(SERVICE, e))?
            .into_bytes();
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| corrupt(format!("report {key}: {e}")))
    }

    async fn delete_sync_objects(&self, project_id: &str, sync_id: &str) -> Result<(), PortError> {
        let snapshots = format!(
            "{}/",
            join_key(&[&self.snapshot_prefix, project_id, sync_id])
        );
        let reports = format!("{}/", join_key(&[&self.report_prefix, project_id, sync_id]));
        self.versions().delete(&snapshots, None).await?;
        self.versions().delete(&reports, None).await
    }

    async fn delete_project_objects(&self, project_id: &str) -> Result<(), PortError> {
        let snapshots = format!("{}/", join_key(&[&self.snapshot_prefix, project_id]));
        let reports = format!("{}/", join_key(&[&self.report_prefix, project_id]));
        self.versions().delete(&snapshots, None).await?;
        self.versions().delete(&reports, None).await
    }
}
