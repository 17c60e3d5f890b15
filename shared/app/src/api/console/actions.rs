//! The console's forms: each turns its fields into the JSON body of the API route it stands for, calls it
//! in-process, and redirects to the page that shows the result (the API's error message otherwise).

use maud::html;
use serde_json::{Map, Value, json};

use super::Ctx;
use super::layout::{flash, page, respond, see_other};
use crate::api::{Api, ApiError, ApiResponse};

/// A number field: empty means "not given" (the API's default applies); anything else must parse.
fn number(ctx: &Ctx<'_>, name: &str) -> Result<Option<Value>, ApiError> {
    let Some(v) = ctx.field(name) else {
        return Ok(None);
    };
    if let Ok(n) = v.parse::<u64>() {
        return Ok(Some(n.into()));
    }
    match v.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Some(json!(f))),
        _ => Err(ApiError::invalid(format!(
            "{name} must be a number, not {v:?}"
        ))),
    }
}

/// Copies the given text fields into a JSON object (absent or empty fields are left out).
fn texts(ctx: &Ctx<'_>, names: &[&str]) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| ctx.field(n).map(|v| (n.to_string(), Value::from(v))))
        .collect()
}

impl Api {
    pub(crate) async fn project_action(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        action: &str,
    ) -> Result<ApiResponse, ApiError> {
        let project = format!("/console/projects/{p}");
        match action {
            "connect" => {
                let answer = self.v1(ctx, "POST", p, &["connect"], &[], None).await?;
                let url = answer["authorization_url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                // A link, not a redirect: the page says what TikTok will ask, and the console's CSP keeps
                // form submissions (and their redirects) on this origin.
                Ok(respond(
                    200,
                    page(
                        &ctx.shell("Connect TikTok"),
                        html! {
                            h1 { "Connect project " code { (p) } " to TikTok" }
                            section {
                                p { "TikTok asks you to sign in and to grant this app access to your ad accounts. Keep "
                                    b { "Audience Management" } " checked: without it no audience can be written. "
                                    "The link is valid for 10 minutes and works once." }
                                div.actions { a #continue-to-tiktok href=(url) { "Continue to TikTok →" } }
                            }
                        },
                    ),
                ))
            }
            "mapping" => {
                let body = Value::Object(texts(
                    ctx,
                    &["amplitude_property", "tiktok_key", "default_phone_region"],
                ));
                self.v1(ctx, "PUT", p, &["mapping"], &[], Some(body))
                    .await?;
                Ok(see_other(&format!("{project}?done=mapping")))
            }
            "syncs" => {
                let mut body = texts(
                    ctx,
                    &[
                        "cohort_id",
                        "advertiser_id",
                        "cadence",
                        "write_mode",
                        "audience_name",
                    ],
                );
                for n in ["max_removal_ratio", "min_create_size"] {
                    if let Some(v) = number(ctx, n)? {
                        body.insert(n.into(), v);
                    }
                }
                let sync = self
                    .v1(ctx, "POST", p, &["syncs"], &[], Some(Value::Object(body)))
                    .await?;
                let id = sync["sync_id"].as_str().unwrap_or_default();
                Ok(see_other(&format!("{project}/syncs/{id}?done=created")))
            }
            "disconnect" => {
                let keep = ctx.field("keep_history") == Some("true");
                let query: &[(&str, &str)] = if keep {
                    &[("keep_history", "true")]
                } else {
                    &[]
                };
                self.v1(ctx, "DELETE", p, &["integration"], query, None)
                    .await?;
                Ok(see_other(&format!("{project}?done=disconnected")))
            }
            _ => Err(ApiError::not_found("no such console action")),
        }
    }

    pub(crate) async fn sync_action(
        &self,
        ctx: &Ctx<'_>,
        p: &str,
        s: &str,
        action: &str,
    ) -> Result<ApiResponse, ApiError> {
        let page_url = format!("/console/projects/{p}/syncs/{s}");
        match action {
            "run" => {
                self.v1(ctx, "POST", p, &["syncs", s, "run"], &[], None)
                    .await?;
                Ok(see_other(&format!("{page_url}?done=run")))
            }
            "pause" | "resume" => {
                let body = json!({ "paused": action == "pause" });
                self.v1(ctx, "PATCH", p, &["syncs", s], &[], Some(body))
                    .await?;
                Ok(see_other(&format!("{page_url}?done=saved")))
            }
            "settings" => {
                let mut body = texts(ctx, &["cadence", "audience_name"]);
                for n in ["max_removal_ratio", "min_create_size"] {
                    if let Some(v) = number(ctx, n)? {
                        body.insert(n.into(), v);
                    }
                }
                self.v1(
                    ctx,
                    "PATCH",
                    p,
                    &["syncs", s],
                    &[],
                    Some(Value::Object(body)),
                )
                .await?;
                Ok(see_other(&format!("{page_url}?done=saved")))
            }
            "delete" => {
                if ctx.field("confirm") != Some("yes") {
                    return Ok(respond(
                        400,
                        page(
                            &ctx.shell("Delete"),
                            flash("bad", "Tick the box to confirm the delete."),
                        ),
                    ));
                }
                self.v1(ctx, "DELETE", p, &["syncs", s], &[], None).await?;
                Ok(see_other(&format!("/console/projects/{p}?done=deleted")))
            }
            "preview" => {
                let body =
                    json!({ "s3_key": ctx.field("s3_key").unwrap_or_default(), "sync_id": s });
                let answer = self
                    .v1(ctx, "POST", p, &["previews"], &[], Some(body))
                    .await?;
                let id = answer["preview_id"].as_str().unwrap_or_default();
                Ok(see_other(&format!("/console/projects/{p}/previews/{id}")))
            }
            _ => Err(ApiError::not_found("no such console action")),
        }
    }
}
