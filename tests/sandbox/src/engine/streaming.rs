//! The audience streaming ("segment") API: partner audiences and their mappings. TikTok allow-lists apps
//! for it (40118 otherwise) and a new audience refuses mappings for its first moments.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::audiences::audience_missing;
use super::digest::{Digest, parse};
use super::rules::{MSG_EXPIRED, MSG_NOT_READY};
use super::validate::{only_fields, opt_str, req_str, req_str_array};
use super::{Audience, MAX_MAPPING_USERS, Outcome, Reject, State, TYPE_PARTNER, codes, reject};

/// `id_schema` values of `segment/mapping/`.
pub const MAPPING_ID_SCHEMAS: &[&str] =
    &["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256"];
/// `id_type` values of `segment/audience/` (the mapping schemas plus TikTok's MD5 device ids).
const AUDIENCE_ID_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "AAID_SHA256",
    "IDFA_MD5",
    "AAID_MD5",
];
/// TikTok cuts longer names to 67 characters followed by "...".
const MAX_NAME: usize = 70;

fn cut_name(name: &str) -> String {
    if name.chars().count() <= MAX_NAME {
        return name.to_string();
    }
    let head: String = name.chars().take(MAX_NAME - 3).collect();
    format!("{head}...")
}

impl State {
    pub fn segment_audience(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        self.try_segment_audience(token, body)
            .unwrap_or_else(Outcome::from)
    }

    fn try_segment_audience(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
    ) -> Result<Outcome, Reject> {
        only_fields(
            body,
            &[
                "advertiser_id",
                "action",
                "custom_audience_name",
                "delete_audience_id",
                "id_type",
            ],
        )?;
        let advertiser_id = req_str(body, "advertiser_id")?;
        self.authorize_streaming(token, std::slice::from_ref(&advertiser_id))?;
        if let Some(t) = opt_str(body, "id_type")?
            && !AUDIENCE_ID_TYPES.contains(&t.as_str())
        {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("id_type {t} is not a valid enum value"),
            ));
        }
        // TikTok's default action is create.
        let action = opt_str(body, "action")?.unwrap_or_else(|| "create".into());
        match action.as_str() {
            "create" => self.create_partner(advertiser_id, body),
            "delete" => {
                let id = req_str(body, "delete_audience_id")?;
                match self.audiences.get(&id) {
                    Some(a) if a.advertiser_id == advertiser_id && a.kind == TYPE_PARTNER => {}
                    _ => return Err(audience_missing(&id)),
                }
                self.audiences.remove(&id);
                Ok(Outcome::ok(json!({})).with_audience(id))
            }
            other => Err(reject(
                codes::INVALID_PARAMS,
                format!("action {other} is not valid (create or delete)"),
            )),
        }
    }

    fn create_partner(
        &mut self,
        advertiser_id: String,
        body: &Map<String, Value>,
    ) -> Result<Outcome, Reject> {
        let name = req_str(body, "custom_audience_name")?;
        if name.is_empty() {
            return Err(reject(
                codes::INVALID_PARAMS,
                "custom_audience_name must not be empty",
            ));
        }
        self.check_audience_room(&advertiser_id)?;
        let id = self.new_audience_id();
        let now = self.now_ms();
        let mut a = Audience::new(
            (id.clone(), advertiser_id),
            cut_name(&name),
            TYPE_PARTNER,
            now,
            self.match_rate,
        );
        a.ready_at_ms = now + self.rules.streaming_not_ready_ms.max(0);
        a.push_history(
            "CREATE",
            "streaming audience created".into(),
            String::new(),
            now,
        );
        self.audiences.insert(id.clone(), a);
        Ok(Outcome::ok(json!({ "audience_id": id })).with_audience(id))
    }

    /// Whether a mapping may touch this audience now.
    fn check_mappable(&self, aud: &str, advertisers: &[String]) -> Result<(), Reject> {
        let Some(a) = self
            .audiences
            .get(aud)
            .filter(|a| advertisers.contains(&a.advertiser_id))
        else {
            return Err(audience_missing(aud));
        };
        if a.kind != TYPE_PARTNER {
            return Err(reject(
                codes::NOT_EDITABLE,
                format!("audience {aud} is not a streaming audience"),
            ));
        }
        if self.is_expired(a) {
            return Err(reject(codes::NOT_EDITABLE, MSG_EXPIRED));
        }
        if self.now_ms() < a.ready_at_ms {
            return Err(reject(codes::NOT_READY, MSG_NOT_READY));
        }
        Ok(())
    }

    pub fn segment_mapping(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        self.try_segment_mapping(token, body)
            .unwrap_or_else(Outcome::from)
    }

    fn try_segment_mapping(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
    ) -> Result<Outcome, Reject> {
        only_fields(
            body,
            &["advertiser_ids", "action", "id_schema", "batch_data"],
        )?;
        let advertisers = req_str_array(body, "advertiser_ids", 1, 100)?;
        self.authorize_streaming(token, &advertisers)?;
        let action = req_str(body, "action")?;
        if !["add", "delete"].contains(&action.as_str()) {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("action {action} is not valid (add or delete)"),
            ));
        }
        let schema = req_str_array(body, "id_schema", 1, MAPPING_ID_SCHEMAS.len())?;
        if let Some(s) = schema
            .iter()
            .find(|s| !MAPPING_ID_SCHEMAS.contains(&s.as_str()))
        {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("id_schema {s} is not valid"),
            ));
        }
        let batch = parse_batch(body, schema.len())?;
        if batch.users > MAX_MAPPING_USERS {
            return Err(reject(
                codes::TOO_MANY_IDS,
                format!(
                    "batch_data has {} users; at most {MAX_MAPPING_USERS} are allowed",
                    batch.users
                ),
            ));
        }
        let ids: Option<Vec<Digest>> = batch
            .pairs
            .iter()
            .map(|(id, _)| parse(id.as_bytes(), 64))
            .collect();
        let Some(ids) = ids else {
            return Err(reject(
                codes::INVALID_PARAMS,
                "every id must be 64 lowercase hex (SHA-256)",
            ));
        };
        let touched: BTreeSet<&String> = batch.pairs.iter().flat_map(|(_, a)| a).collect();
        for aud in &touched {
            self.check_mappable(aud, &advertisers)?;
        }
        let now = self.now_ms();
        for (d, (_, auds)) in ids.iter().zip(&batch.pairs) {
            for aud in auds {
                if let Some(a) = self.audiences.get_mut(aud) {
                    if action == "add" {
                        a.members.insert(*d);
                    } else {
                        a.members.remove(d);
                    }
                }
            }
        }
        for aud in touched {
            if let Some(a) = self.audiences.get_mut(aud) {
                a.members.settle();
                a.modify_ms = now;
            }
        }
        Ok(Outcome::ok(json!({})))
    }
}

/// The users of a `segment/mapping/` batch: each (id, audience_ids) pair, and the number of users.
pub struct Batch {
    pub users: usize,
    pub pairs: Vec<(String, Vec<String>)>,
}

pub fn parse_batch(body: &Map<String, Value>, schema_len: usize) -> Result<Batch, Reject> {
    let Some(Value::Array(users)) = body.get("batch_data") else {
        return Err(reject(codes::INVALID_PARAMS, "batch_data must be an array"));
    };
    let mut pairs = Vec::new();
    for user in users {
        let Value::Array(positions) = user else {
            return Err(reject(
                codes::INVALID_PARAMS,
                "each batch_data item must be an array",
            ));
        };
        if positions.len() != schema_len {
            return Err(reject(
                codes::INVALID_PARAMS,
                "each batch_data item must follow id_schema",
            ));
        }
        for p in positions {
            let Value::Object(o) = p else {
                return Err(reject(
                    codes::INVALID_PARAMS,
                    "each id position must be an object",
                ));
            };
            if o.is_empty() {
                continue;
            }
            let id = req_str(o, "id")?;
            let auds = req_str_array(o, "audience_ids", 1, 100)?;
            pairs.push((id, auds));
        }
    }
    Ok(Batch {
        users: users.len(),
        pairs,
    })
}

/// Ids a request carries, for the log (best effort: the request may be malformed).
pub fn mapping_ids(body: &Map<String, Value>) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut first_aud = None;
    if let Some(Value::Array(users)) = body.get("batch_data") {
        for u in users.iter().filter_map(Value::as_array) {
            for p in u.iter().filter_map(Value::as_object) {
                if let Some(id) = p.get("id").and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
                if first_aud.is_none() {
                    first_aud = p
                        .get("audience_ids")
                        .and_then(Value::as_array)
                        .and_then(|a| a.first())
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
            }
        }
    }
    (ids, first_aud)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_to_67_and_an_ellipsis() {
        assert_eq!(cut_name("short"), "short");
        let n70 = "x".repeat(70);
        assert_eq!(cut_name(&n70), n70);
        let cut = cut_name(&"y".repeat(71));
        assert_eq!(cut.chars().count(), 70);
        assert!(cut.ends_with("..."));
    }
}
