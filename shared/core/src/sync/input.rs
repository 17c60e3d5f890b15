//! The sync-runner's one input type, deserialized from any of the events that start it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cohort::naming::decode_s3_event_key;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub bucket: String,
    /// Decoded once from the event's URL encoding: a raw key.
    pub key: String,
    pub event_name: String,
    /// The object's size as the event tells it.
    pub size: Option<u64>,
}

/// Every payload the runner sends itself or receives from a schedule: serialized and parsed by this one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    Schedule {
        project_id: String,
        sync_id: String,
    },
    Manual {
        project_id: String,
        sync_id: String,
    },
    Pending {
        project_id: String,
        sync_id: String,
        s3_key: String,
    },
    /// A run continuing in a new invocation: only the lease's `holder` at `fence` may take it over (the run
    /// it continues is the sync's active run).
    Continue {
        project_id: String,
        sync_id: String,
        #[serde(alias = "run_id")]
        holder: String,
        #[serde(default)]
        fence: u64,
    },
    /// The sweeper asks one sync to resume its unfinished work (a cut-off run, held or deferred changes).
    Resume {
        project_id: String,
        sync_id: String,
    },
    /// The sweeper's schedule (every few minutes): resume syncs with unfinished work whose lease expired.
    Sweep,
    Preview {
        project_id: String,
        preview_id: String,
        s3_key: String,
        /// Compare with this sync's committed snapshot and apply its guards (else a new sync's defaults).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync_id: Option<String>,
    },
}

impl Trigger {
    pub fn to_json(&self) -> serde_json::Value {
        // A derived Serialize of plain strings and integers cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerInput {
    /// S3 ObjectCreated records (possibly several per event).
    S3(Vec<S3Object>),
    /// The test event S3 sends when a notification is configured: acknowledged, nothing to do.
    S3TestEvent,
    Trigger(Trigger),
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("unrecognized runner input: {0}")]
    Unrecognized(String),
    #[error("bad S3 record: {0}")]
    BadRecord(String),
}

impl RunnerInput {
    pub fn parse(v: &Value) -> Result<RunnerInput, InputError> {
        if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return Ok(RunnerInput::S3TestEvent);
        }
        if let Some(records) = v.get("Records").and_then(Value::as_array) {
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                let source = r
                    .get("eventSource")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if source != "aws:s3" {
                    return Err(InputError::BadRecord(format!(
                        "eventSource {source:?} is not aws:s3"
                    )));
                }
                let event_name = r
                    .get("eventName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let s3 = r
                    .get("s3")
                    .ok_or_else(|| InputError::BadRecord("no s3 field".into()))?;
                let bucket = s3
                    .pointer("/bucket/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| InputError::BadRecord("no bucket name".into()))?
                    .to_string();
                let encoded = s3
                    .pointer("/object/key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| InputError::BadRecord("no object key".into()))?;
                let key = decode_s3_event_key(encoded)
                    .map_err(|e| InputError::BadRecord(e.to_string()))?;
                out.push(S3Object {
                    bucket,
                    key,
                    event_name,
                    size: s3.pointer("/object/size").and_then(Value::as_u64),
                });
            }
            return Ok(RunnerInput::S3(out));
        }
        if v.get("trigger").is_some() {
            let t: Trigger = serde_json::from_value(v.clone())
                .map_err(|e| InputError::Unrecognized(format!("trigger payload: {e}")))?;
            return Ok(RunnerInput::Trigger(t));
        }
        let shape = match v {
            Value::Object(m) => format!(
                "object with keys {:?}",
                m.keys().take(8).collect::<Vec<_>>()
            ),
            other => format!("{} value", type_name(other)),
        };
        Err(InputError::Unrecognized(shape))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s3_put_event_key_decoded_once() {
        let ev = json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-11-26T10:00:00.000Z", "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "cohorts",
                   "bucket": {"name": "b", "arn": "arn:aws:s3:::b"},
                   "object": {"key": "cohorts/my+dir/abc_2026-11-26T10%3A00_existing.csv", "size": 10, "eTag": "x", "sequencer": "1"}}
        }]});
        let RunnerInput::S3(objs) = RunnerInput::parse(&ev).unwrap() else {
            panic!()
        };
        assert_eq!(
            objs[0].key,
            "cohorts/my dir/abc_2026-11-26T10:00_existing.csv"
        );
        assert_eq!(objs[0].bucket, "b");
    }

    #[test]
    fn test_event_and_triggers() {
        let t =
            json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "x", "Bucket": "b"});
        assert_eq!(RunnerInput::parse(&t).unwrap(), RunnerInput::S3TestEvent);
        let s = json!({"trigger": "schedule", "project_id": "p", "sync_id": "s"});
        assert_eq!(
            RunnerInput::parse(&s).unwrap(),
            RunnerInput::Trigger(Trigger::Schedule {
                project_id: "p".into(),
                sync_id: "s".into()
            })
        );
        let c = json!({"trigger": "continue", "project_id": "p", "sync_id": "s", "run_id": "r"});
        assert!(matches!(
            RunnerInput::parse(&c).unwrap(),
            RunnerInput::Trigger(Trigger::Continue { .. })
        ));
        assert!(RunnerInput::parse(&json!({"trigger": "bogus"})).is_err());
        assert!(RunnerInput::parse(&json!({"trigger": "pending", "project_id": "p"})).is_err());
        assert!(RunnerInput::parse(&json!([1])).is_err());
    }
}
