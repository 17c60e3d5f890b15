//! Permanent deletion in the versioned bucket: every version and delete marker under a prefix (a plain
//! delete only adds a marker and keeps the data, here hashed identifiers).

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};

use audience_core::ports::PortError;

use crate::error::unavailable;

const SERVICE: &str = "S3";

/// One bucket's versions.
pub(crate) struct Versions<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
}

impl Versions<'_> {
    /// Deletes every version (and delete marker) under a prefix; with `exact`, only those of that one key.
    pub(crate) async fn delete(&self, prefix: &str, exact: Option<&str>) -> Result<(), PortError> {
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_object_versions()
                .bucket(self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| unavailable(SERVICE, e))?;
            let wanted = |k: &str| exact.is_none_or(|e| e == k);
            let mut ids = Vec::new();
            for v in out.versions() {
                if let Some(k) = v.key().filter(|k| wanted(k)) {
                    ids.push((k.to_string(), v.version_id().map(str::to_string)));
                }
            }
            for m in out.delete_markers() {
                if let Some(k) = m.key().filter(|k| wanted(k)) {
                    ids.push((k.to_string(), m.version_id().map(str::to_string)));
                }
            }
            for chunk in ids.chunks(1000) {
                self.delete_chunk(chunk).await?;
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker;
                version_marker = out.next_version_id_marker;
                if key_marker.is_none() {
                    return Ok(());
                }
            } else {
                return Ok(());
            }
        }
    }

    /// One DeleteObjects call (at most 1,000 keys) of `(key, version id)` pairs.
    async fn delete_chunk(&self, chunk: &[(String, Option<String>)]) -> Result<(), PortError> {
        let objects = chunk
            .iter()
            .map(|(k, v)| {
                ObjectIdentifier::builder()
                    .key(k)
                    .set_version_id(v.clone().filter(|v| v != "null"))
                    .build()
                    .map_err(|e| PortError::Invalid(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| PortError::Invalid(e.to_string()))?;
        let done = self
            .client
            .delete_objects()
            .bucket(self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| unavailable(SERVICE, e))?;
        // DeleteObjects answers 200 with per-key errors (AccessDenied on a version...): a version
        // left behind keeps hashed identifiers, so it fails the call (retrying deletes the rest).
        if let Some(e) = done.errors().first() {
            return Err(PortError::Unavailable {
                service: SERVICE,
                message: format!(
                    "{} of {} versions not deleted; first: {} {}",
                    done.errors().len(),
                    chunk.len(),
                    e.key().unwrap_or("?"),
                    e.code().unwrap_or("?")
                ),
            });
        }
        Ok(())
    }
}
