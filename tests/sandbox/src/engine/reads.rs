//! Reading audiences back: `get/` (details and history) and `list/`, as TikTok shows them now (processing,
//! expiry).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::audiences::audience_missing;
use super::validate::{only_query, query_int, query_required, query_str_array};
use super::{
    Audience, EXPIRING_WINDOW_MS, MIN_MATCHED, Outcome, Reject, SCOPE_AUDIENCE_READ, State,
    fmt_time,
};

impl State {
    /// `cover_num` as `get/` shows it now.
    pub(crate) fn displayed_cover(&self, a: &Audience) -> usize {
        if self.is_processing(a) {
            return a.shown_cover;
        }
        let matched = self.matched(&a.members);
        if matched >= MIN_MATCHED { matched } else { 0 }
    }

    /// The `audience_details` object of `get/` (and each item of `list/`).
    pub fn details(&self, a: &Audience) -> Value {
        let now = self.now_ms();
        let processing = self.is_processing(a);
        let expired = self.is_expired(a);
        let big = self.matched(&a.members) >= MIN_MATCHED;
        let valid = big && !processing && !expired;
        let expires = self.expires_at(a);
        let msg = if expired {
            "The audience has expired".to_string()
        } else if processing {
            "The audience is being processed".to_string()
        } else if !big {
            format!("Audience needs at least {MIN_MATCHED} matched users")
        } else {
            String::new()
        };
        json!({
            "audience_id": a.id,
            "name": a.name,
            "type": a.kind,
            "audience_sub_type": "NORMAL",
            "calculate_type": a.calculate_type,
            "cover_num": self.displayed_cover(a),
            "is_valid": valid,
            "is_expiring": !expired && expires - now <= EXPIRING_WINDOW_MS,
            "is_creator": true,
            "is_auto_refresh": false,
            "shared": false,
            "audience_enhancement": false,
            "owner_id": a.advertiser_id,
            "msg": msg,
            "error_msg": "",
            "rule": "",
            "lookalike_spec": null,
            "create_time": fmt_time(a.create_ms),
            "expired_time": fmt_time(expires),
        })
    }

    fn history(&self, a: &Audience, size: usize) -> Vec<Value> {
        a.history
            .iter()
            .rev()
            .take(size)
            .map(|h| {
                json!({
                    "action": h.action,
                    "action_detail": h.action_detail,
                    "editor": "API",
                    "msg": h.msg,
                    "opt_time": fmt_time(h.opt_ms),
                })
            })
            .collect()
    }

    pub fn get(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(
                query,
                &["advertiser_id", "custom_audience_ids", "history_size"],
            )?;
            let advertiser_id = query_required(query, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_READ),
            )?;
            let ids = query_str_array(query, "custom_audience_ids", true, 1, 100)?;
            let history_size = query_int(query, "history_size", 100, 1, 100)? as usize;
            let mut list = Vec::new();
            for id in &ids {
                match self.audiences.get(id) {
                    Some(a) if a.advertiser_id == advertiser_id => list.push(json!({
                        "audience_details": self.details(a),
                        "audience_history": self.history(a, history_size),
                    })),
                    _ => return Err(audience_missing(id)),
                }
            }
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn list(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(
                query,
                &["advertiser_id", "custom_audience_ids", "page", "page_size"],
            )?;
            let advertiser_id = query_required(query, "advertiser_id")?;
            self.authorize(
                token,
                std::slice::from_ref(&advertiser_id),
                Some(SCOPE_AUDIENCE_READ),
            )?;
            let filter = if query.contains_key("custom_audience_ids") {
                Some(query_str_array(query, "custom_audience_ids", true, 1, 100)?)
            } else {
                None
            };
            let page = query_int(query, "page", 1, 1, i64::MAX)? as usize;
            let page_size = query_int(query, "page_size", 10, 1, 100)? as usize;
            let all: Vec<&Audience> = self
                .audiences
                .values()
                .filter(|a| a.advertiser_id == advertiser_id)
                .filter(|a| filter.as_ref().is_none_or(|f| f.contains(&a.id)))
                .collect();
            let total = all.len();
            let list: Vec<Value> = all
                .iter()
                .skip((page - 1).saturating_mul(page_size))
                .take(page_size)
                .map(|a| self.details(a))
                .collect();
            Ok(Outcome::ok(json!({
                "list": list,
                "page_info": {
                    "page": page,
                    "page_size": page_size,
                    "total_number": total,
                    "total_page": total.div_ceil(page_size),
                }
            })))
        })();
        r.unwrap_or_else(Outcome::from)
    }
}
