//! Consent, the auth-code exchange, tokens and their scopes, and the account endpoints.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::validate::{
    only_fields, only_query, opt_bool, parse_str_array, query_required, query_str_array, req_str,
};
use super::{
    AUTH_CODE_TTL_MS, AppSpec, AuthCode, Outcome, Reject, SCOPE_AUDIENCE_MANAGEMENT,
    SCOPE_AUDIENCE_READ, SCOPE_AUDIENCE_WRITE, State, Token, codes, fnv, random_hex, reject,
};

/// Whether granted scopes cover `s`: listed, or its parent is (3, Audience Management, covers 30 and 31).
pub fn scopes_cover(granted: &[i64], s: i64) -> bool {
    granted.contains(&s)
        || ((s == SCOPE_AUDIENCE_READ || s == SCOPE_AUDIENCE_WRITE)
            && granted.contains(&SCOPE_AUDIENCE_MANAGEMENT))
}

impl State {
    pub fn revoke_app_tokens(&mut self, app_id: &str) -> usize {
        let mut n = 0;
        for t in self
            .tokens
            .values_mut()
            .filter(|t| t.app_id == app_id && !t.revoked)
        {
            t.revoked = true;
            n += 1;
        }
        n
    }

    /// `GET /portal/auth`: `Ok(Some(code))` approve, `Ok(None)` deny, `Err` bad request (400).
    pub fn consent(&mut self, app_id: &str, redirect_uri: &str) -> Result<Option<String>, String> {
        let app = self
            .apps
            .get(app_id)
            .ok_or_else(|| format!("unknown app_id {app_id}"))?;
        if !app.accepts_redirect(redirect_uri) {
            return Err("redirect_uri is not registered for this app".into());
        }
        if self.consent_deny {
            return Ok(None);
        }
        let code = random_hex(20);
        let expires_at_ms = self.now_ms() + AUTH_CODE_TTL_MS;
        self.auth_codes.insert(
            code.clone(),
            AuthCode {
                app_id: app_id.to_string(),
                expires_at_ms,
                used: false,
            },
        );
        Ok(Some(code))
    }

    pub fn exchange(&mut self, body: &Map<String, Value>) -> Outcome {
        self.try_exchange(body).unwrap_or_else(Outcome::from)
    }

    fn try_exchange(&mut self, body: &Map<String, Value>) -> Result<Outcome, Reject> {
        only_fields(
            body,
            &["app_id", "secret", "auth_code", "return_advertiser_ids"],
        )?;
        let app_id = req_str(body, "app_id")?;
        let secret = req_str(body, "secret")?;
        let code = req_str(body, "auth_code")?;
        let return_ids = opt_bool(body, "return_advertiser_ids")?.unwrap_or(true);
        let app = self.check_app(&app_id, &secret)?.clone();
        let now = self.now_ms();
        let Some(ac) = self.auth_codes.get_mut(&code) else {
            return Err(reject(codes::AUTH_CODE_INVALID, "auth_code is invalid"));
        };
        if ac.app_id != app_id {
            return Err(reject(
                codes::AUTH_CODE_INVALID,
                "auth_code was issued to another app",
            ));
        }
        if ac.used {
            return Err(reject(
                codes::AUTH_CODE_INVALID,
                "auth_code has already been used",
            ));
        }
        if now >= ac.expires_at_ms {
            return Err(reject(codes::AUTH_CODE_INVALID, "auth_code has expired"));
        }
        ac.used = true;
        let token = random_hex(40);
        let advertiser_ids = app.advertiser_ids();
        self.tokens.insert(
            token.clone(),
            Token {
                app_id: app.app_id.clone(),
                advertiser_ids: advertiser_ids.clone(),
                scopes: app.scopes.clone(),
                revoked: false,
            },
        );
        let mut data = json!({ "access_token": token, "scope": app.scopes });
        if return_ids {
            data["advertiser_ids"] = json!(advertiser_ids);
        }
        Ok(Outcome::ok(data))
    }

    pub fn revoke_token(&mut self, body: &Map<String, Value>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_fields(body, &["app_id", "secret", "access_token"])?;
            let app_id = req_str(body, "app_id")?;
            let secret = req_str(body, "secret")?;
            let token = req_str(body, "access_token")?;
            self.check_app(&app_id, &secret)?;
            match self.tokens.get_mut(&token) {
                Some(t) if t.app_id == app_id && !t.revoked => {
                    t.revoked = true;
                    Ok(Outcome::ok(json!({})))
                }
                _ => Err(reject(
                    codes::TOKEN_INVALID,
                    "access_token is invalid or already revoked",
                )),
            }
        })();
        r.unwrap_or_else(Outcome::from)
    }

    fn check_app(&self, app_id: &str, secret: &str) -> Result<&AppSpec, Reject> {
        match self.apps.get(app_id) {
            Some(app) if app.secret == secret => Ok(app),
            Some(_) => Err(reject(
                codes::APP_SECRET,
                "The app secret is not correct for this app_id",
            )),
            None => Err(reject(
                codes::INVALID_PARAMS,
                format!("app_id {app_id} does not exist"),
            )),
        }
    }

    /// Checks the `Access-Token` for the advertisers and scope a call needs.
    pub fn authorize(
        &self,
        token: Option<&str>,
        advertisers: &[String],
        scope: Option<i64>,
    ) -> Result<Token, Reject> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(reject(
                    codes::TOKEN_EMPTY,
                    "Access token is null, please check your header",
                ));
            }
        };
        let t = match self.tokens.get(token) {
            Some(t) if !t.revoked => t,
            Some(_) => {
                return Err(reject(
                    codes::TOKEN_INVALID,
                    "The access token has been revoked",
                ));
            }
            None => return Err(reject(codes::TOKEN_INVALID, "The access token is invalid")),
        };
        for a in advertisers {
            if !t.advertiser_ids.contains(a) {
                return Err(reject(
                    codes::TOKEN_ADVERTISER,
                    format!("The access token is not valid for advertiser {a}"),
                ));
            }
        }
        if let Some(s) = scope
            && !scopes_cover(&t.scopes, s)
        {
            return Err(no_scope(s));
        }
        Ok(t.clone())
    }

    /// As [`State::authorize`], and the token's app must be allow-listed for the streaming API.
    pub(crate) fn authorize_streaming(
        &self,
        token: Option<&str>,
        advertisers: &[String],
    ) -> Result<Token, Reject> {
        let t = self.authorize(token, advertisers, Some(SCOPE_AUDIENCE_WRITE))?;
        if !self
            .apps
            .get(&t.app_id)
            .is_some_and(|a| a.streaming_allowed)
        {
            return Err(reject(
                codes::NOT_ALLOWLISTED,
                "The app is not in the allowlist of the audience streaming API",
            ));
        }
        Ok(t)
    }

    pub fn token_app(&self, token: &str) -> Option<String> {
        self.tokens.get(token).map(|t| t.app_id.clone())
    }

    pub fn authorized_advertisers(
        &self,
        token: Option<&str>,
        query: &HashMap<String, String>,
    ) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(query, &["app_id", "secret"])?;
            let app_id = query_required(query, "app_id")?;
            let secret = query_required(query, "secret")?;
            let app = self.check_app(&app_id, &secret)?.clone();
            let t = self.authorize(token, &[], None)?;
            if t.app_id != app.app_id {
                return Err(reject(
                    codes::TOKEN_INVALID,
                    "The access token belongs to another app",
                ));
            }
            // TikTok lists this endpoint under the ad-account read permission, when the app has it set.
            if let Some(s) = app.advertiser_get_scope
                && !scopes_cover(&t.scopes, s)
            {
                return Err(no_scope(s));
            }
            let list: Vec<Value> = app
                .advertisers
                .iter()
                .filter(|a| t.advertiser_ids.contains(&a.advertiser_id))
                .map(|a| json!({"advertiser_id": a.advertiser_id, "advertiser_name": a.advertiser_name}))
                .collect();
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }

    pub fn user_info(&self, token: Option<&str>) -> Outcome {
        match self.authorize(token, &[], None) {
            Ok(t) => Outcome::ok(json!({
                "core_user_id": format!("7{:018}", fnv(&t.app_id) % 1_000_000_000_000_000_000),
                "display_name": "Sandbox User",
                "email": "sandbox-user@example.invalid",
                "avatar_url": "",
                "create_time": 1_700_000_000i64,
            })),
            Err(r) => r.into(),
        }
    }

    pub fn advertiser_info(&self, token: Option<&str>, query: &HashMap<String, String>) -> Outcome {
        let r = (|| -> Result<Outcome, Reject> {
            only_query(query, &["advertiser_ids", "fields"])?;
            let ids = query_str_array(query, "advertiser_ids", true, 1, 100)?;
            if let Some(fields) = query.get("fields") {
                parse_str_array(fields, "fields")?;
            }
            let t = self.authorize(token, &ids, None)?;
            let app = self.apps.get(&t.app_id);
            let list: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let name = app
                        .and_then(|a| a.advertisers.iter().find(|x| &x.advertiser_id == id))
                        .map(|a| a.advertiser_name.clone())
                        .unwrap_or_default();
                    json!({
                        "advertiser_id": id,
                        "name": name,
                        "status": "STATUS_ENABLE",
                        "role": "ROLE_ADVERTISER",
                        "currency": "USD",
                        "timezone": "Etc/GMT",
                        "country": "US",
                        "create_time": 1_700_000_000i64,
                    })
                })
                .collect();
            Ok(Outcome::ok(json!({ "list": list })))
        })();
        r.unwrap_or_else(Outcome::from)
    }
}

fn no_scope(s: i64) -> Reject {
    reject(
        codes::PERMISSION,
        format!("No permission: scope {s} was not granted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_scope_3_covers_30_and_31_only() {
        assert!(scopes_cover(&[3], 30));
        assert!(scopes_cover(&[3], 31));
        assert!(!scopes_cover(&[3], 100));
        assert!(scopes_cover(&[30], 30));
        assert!(!scopes_cover(&[30], 31));
        assert!(!scopes_cover(&[30, 31], 3));
    }
}
