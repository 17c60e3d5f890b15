//! Customer-file audiences: create, update (with TikTok's processing window, size rule and expiry) and
//! delete; reading them back is in `reads`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::digest::{Digest, count_matched, match_limit};
use super::rules::{MSG_EXPIRED, MSG_PROCESSING, MSG_TOO_SMALL};
use super::validate::{check_len, only_fields, opt_object, opt_str, req_str, req_str_array};
use super::{
    Audience, MIN_MATCHED, Members, Outcome, Reject, SCOPE_AUDIENCE_WRITE, State,
    TYPE_CUSTOMER_FILE, codes, reject,
};

/// `calculate_type` values accepted by `create/` (TikTok's CalculateType enum).
pub const CREATE_CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "FIRST_MD5",
    "FIRST_SHA256",
    "GAID_MD5",
    "GAID_SHA256",
    "IDFA_MD5",
    "IDFA_SHA256",
    "MULTIPLE_TYPES",
    "PHONE_SHA256",
];

const CREATE_FIELDS: &[&str] = &[
    "advertiser_id",
    "custom_audience_name",
    "calculate_type",
    "file_paths",
    "audience_sub_type",
    "retention_in_days",
    "audience_enhancement",
];

const UPDATE_FIELDS: &[&str] = &[
    "advertiser_id",
    "custom_audience_id",
    "custom_audience_name",
    "audience_sub_type",
    "file_paths",
    "action",
    "audience_enhancement",
    "context_info",
];

struct UpdateRequest {
    advertiser_id: String,
    id: String,
    new_name: Option<String>,
    paths: Option<Vec<String>>,
    action: String,
}

/// A file edit that passed the size rule.
struct FileEdit {
    /// The files' digests, ascending and distinct.
    incoming: Vec<Digest>,
    /// Members after the edit.
    after: usize,
    failures: Vec<String>,
}

pub(crate) fn audience_missing(id: &str) -> Reject {
    reject(
        codes::NOT_FOUND,
        format!("The audience {id} does not exist"),
    )
}

fn check_create_options(body: &Map<String, Value>) -> Result<(), Reject> {
    if let Some(v) = body.get("audience_sub_type") {
        let s = v
            .as_str()
            .ok_or_else(|| reject(codes::INVALID_PARAMS, "audience_sub_type must be a string"))?;
        if !["NORMAL", "REACH_FREQUENCY"].contains(&s) {
            return Err(reject(
                codes::INVALID_PARAMS,
                "audience_sub_type is not a valid enum value",
            ));
        }
    }
    if let Some(v) = body.get("retention_in_days")
        && !v.as_i64().is_some_and(|d| (1..=365).contains(&d))
    {
        return Err(reject(
            codes::INVALID_PARAMS,
            "retention_in_days must be an integer in [1, 365]",
        ));
    }
    if let Some(v) = body.get("audience_enhancement")
        && !v.is_boolean()
    {
        return Err(reject(
            codes::INVALID_PARAMS,
            "audience_enhancement must be a boolean",
        ));
    }
    Ok(())
}

impl State {
    /// Refuses when an audience would reference more distinct files over its life than allowed.
    fn check_file_count(&self, used: &BTreeSet<String>, paths: &[String]) -> Result<(), Reject> {
        let max = self.rules.max_files_per_audience;
        let n = used.iter().chain(paths).collect::<BTreeSet<_>>().len();
        if max > 0 && n > max {
            return Err(reject(
                codes::FILE_COUNT,
                format!("An audience can use at most {max} files; this one would use {n}"),
            ));
        }
        Ok(())
    }

    pub fn create(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        self.create_with(token, body, None)
    }

    /// `create` with the union of the files' digests already made (`file_ids`); `None` makes it here.
    pub fn create_with(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
        union: Option<Vec<Digest>>,
    ) -> Outcome {
        self.try_create(token, body, union)
            .unwrap_or_else(Outcome::from)
    }

    fn try_create(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
        union: Option<Vec<Digest>>,
    ) -> Result<Outcome, Reject> {
        only_fields(body, CREATE_FIELDS)?;
        let advertiser_id = req_str(body, "advertiser_id")?;
        self.authorize(
            token,
            std::slice::from_ref(&advertiser_id),
            Some(SCOPE_AUDIENCE_WRITE),
        )?;
        let name = req_str(body, "custom_audience_name")?;
        check_len("custom_audience_name", &name, 1, 128)?;
        let calculate_type = req_str(body, "calculate_type")?;
        if !CREATE_CALCULATE_TYPES.contains(&calculate_type.as_str()) {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("calculate_type {calculate_type} is not a valid enum value"),
            ));
        }
        let paths = req_str_array(body, "file_paths", 1, 500)?;
        check_create_options(body)?;
        let files = self.resolve_files(&advertiser_id, &calculate_type, &paths, union)?;
        self.check_file_count(&BTreeSet::new(), &paths)?;
        self.check_audience_room(&advertiser_id)?;
        let id = self.new_audience_id();
        let now = self.now_ms();
        let n = files.digests.len();
        let rate = self.match_rate;
        let mut a = Audience::new(
            (id.clone(), advertiser_id),
            name,
            TYPE_CUSTOMER_FILE,
            now,
            rate,
        );
        a.calculate_type = Some(calculate_type);
        a.members = Members::from_sorted(files.digests, rate);
        a.files_used = paths.iter().cloned().collect();
        a.processing_until_ms = now + self.rules.processing_ms.max(0);
        a.push_history(
            "CREATE",
            format!("created from {} file(s), {n} ids", paths.len()),
            files.failures.join("; "),
            now,
        );
        self.audiences.insert(id.clone(), a);
        self.take_daily_call(&id)?;
        Ok(Outcome::ok(json!({ "custom_audience_id": id })).with_audience(id))
    }

    /// Whether an existing audience can be edited now: expired and processing audiences cannot.
    fn check_editable(&self, a: &Audience) -> Result<(), Reject> {
        if self.is_expired(a) {
            return Err(reject(codes::NOT_EDITABLE, MSG_EXPIRED));
        }
        if self.is_processing(a) {
            return Err(reject(codes::NOT_EDITABLE, MSG_PROCESSING));
        }
        Ok(())
    }

    pub fn update(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        self.update_with(token, body, None)
    }

    /// `update` with the union of the files' digests already made (`file_ids`); `None` makes it here.
    pub fn update_with(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
        union: Option<Vec<Digest>>,
    ) -> Outcome {
        self.try_update(token, body, union)
            .unwrap_or_else(Outcome::from)
    }

    /// The fields of an `update/` body, checked.
    fn update_request(
        &self,
        token: Option<&str>,
        body: &Map<String, Value>,
    ) -> Result<UpdateRequest, Reject> {
        only_fields(body, UPDATE_FIELDS)?;
        opt_object(body, "context_info")?;
        let advertiser_id = req_str(body, "advertiser_id")?;
        self.authorize(
            token,
            std::slice::from_ref(&advertiser_id),
            Some(SCOPE_AUDIENCE_WRITE),
        )?;
        let id = req_str(body, "custom_audience_id")?;
        let new_name = opt_str(body, "custom_audience_name")?;
        if let Some(n) = &new_name {
            check_len("custom_audience_name", n, 1, 128)?;
        }
        let paths = match body.get("file_paths") {
            Some(_) => Some(req_str_array(body, "file_paths", 1, 500)?),
            None => None,
        };
        let action = opt_str(body, "action")?;
        if let Some(a) = &action
            && !["APPEND", "REMOVE", "REPLACE"].contains(&a.as_str())
        {
            return Err(reject(
                codes::INVALID_PARAMS,
                format!("action {a} is not a valid enum value"),
            ));
        }
        if new_name.is_none() && paths.is_none() {
            return Err(reject(
                codes::INVALID_PARAMS,
                "pass custom_audience_name or file_paths",
            ));
        }
        Ok(UpdateRequest {
            advertiser_id,
            id,
            new_name,
            paths,
            // TikTok's documented default when file_paths come without an action.
            action: action.unwrap_or_else(|| "REPLACE".to_string()),
        })
    }

    fn try_update(
        &mut self,
        token: Option<&str>,
        body: &Map<String, Value>,
        union: Option<Vec<Digest>>,
    ) -> Result<Outcome, Reject> {
        let UpdateRequest {
            advertiser_id,
            id,
            new_name,
            paths,
            action,
        } = self.update_request(token, body)?;
        let audience = match self.audiences.get(&id) {
            Some(a) if a.advertiser_id == advertiser_id => a,
            _ => return Err(audience_missing(&id)),
        };
        if audience.kind != TYPE_CUSTOMER_FILE {
            return Err(reject(
                codes::NOT_EDITABLE,
                "only customer file audiences can be updated here",
            ));
        }
        self.check_editable(audience)?;
        self.check_daily_calls_left(&id)?;
        let edit = match &paths {
            Some(paths) => Some(self.file_edit(audience, &action, paths, union)?),
            None => None,
        };
        let shown = self.displayed_cover(audience);
        self.take_daily_call(&id)?;
        let now = self.now_ms();
        let processing_ms = self.rules.processing_ms.max(0);
        let Some(a) = self.audiences.get_mut(&id) else {
            return Err(audience_missing(&id));
        };
        if let Some(n) = new_name {
            a.name = n;
        }
        match edit {
            Some(edit) => {
                let detail = format!("{action}: {} -> {} ids", a.members.len(), edit.after);
                match action.as_str() {
                    "APPEND" => a.members.append(&edit.incoming),
                    "REMOVE" => a.members.remove_all(&edit.incoming),
                    _ => a.members.replace(edit.incoming),
                }
                a.files_used.extend(paths.unwrap_or_default());
                // TikTok re-matches the audience: until then it shows its previous size.
                a.shown_cover = shown;
                a.processing_until_ms = now + processing_ms;
                a.push_history(&action, detail, edit.failures.join("; "), now);
            }
            None => a.push_history("RENAME", "renamed".into(), String::new(), now),
        }
        a.modify_ms = now;
        Ok(Outcome::ok(json!({})).with_audience(id))
    }

    /// A file edit checked against the size rule without touching the audience: what it brings, the
    /// size after it and the notes on lines that failed.
    fn file_edit(
        &self,
        audience: &Audience,
        action: &str,
        paths: &[String],
        union: Option<Vec<Digest>>,
    ) -> Result<FileEdit, Reject> {
        let calc = audience.calculate_type.clone().unwrap_or_default();
        let incoming = self.resolve_files(&audience.advertiser_id, &calc, paths, union)?;
        self.check_file_count(&audience.files_used, paths)?;
        let current = &audience.members;
        let inc = &incoming.digests;
        let inc_matched = count_matched(inc, match_limit(self.match_rate));
        let (after, matched) = match action {
            "APPEND" | "REMOVE" => {
                let (both, both_matched) = current.overlap(inc);
                let now_matched = self.matched(current);
                if action == "APPEND" {
                    (
                        current.len() + inc.len() - both,
                        now_matched + inc_matched - both_matched,
                    )
                } else {
                    (current.len() - both, now_matched - both_matched)
                }
            }
            _ => (inc.len(), inc_matched),
        };
        if matched < MIN_MATCHED {
            return Err(reject(
                codes::NOT_EDITABLE,
                format!(
                    "{MSG_TOO_SMALL}: it would have {matched} matched users after {action}; \
                     at least {MIN_MATCHED} are required"
                ),
            ));
        }
        Ok(FileEdit {
            incoming: incoming.digests,
            after,
            failures: incoming.failures,
        })
    }

    /// Deletes audiences; the one edit an expired audience still accepts.
    pub fn delete(&mut self, token: Option<&str>, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(body, &["advertiser_id", "custom_audience_ids"])?;
            let advertiser_id = req_str(body, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_WRITE),
            )?;
            let ids = req_str_array(body, "custom_audience_ids", 1, 100)?;
            if let Some(id) = ids.iter().find(|id| {
                self.audiences
                    .get(*id)
                    .is_none_or(|a| a.advertiser_id != advertiser_id)
            }) {
                return Err(audience_missing(id));
            }
            for id in &ids {
                self.audiences.remove(id);
            }
            Ok(Outcome::ok(json!({})))
        })();
        r.unwrap_or_else(Outcome::from)
    }
}
