//! The web console at `/console`: server-rendered pages over the same routes the JSON API serves (the console
//! calls [`Api::route_project`] in-process, so a page and `curl` never disagree).
//!
//! Sign-in is the admin token, once; then a signed session cookie (`session.rs`). Every form carries the
//! session's CSRF token and is refused when the browser says it came from another site. Pages are plain HTML
//! with one stylesheet, under a strict Content-Security-Policy: no script runs anywhere in the console.

mod actions;
mod history;
mod layout;
mod pages;
mod session;
mod sync_page;

use maud::html;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use self::layout::{Shell, error_banner, page, respond, see_other};
use self::session::Session;
use super::{Api, ApiError, ApiRequest, ApiResponse, parse_query};

/// A signed-in request: its session, CSRF token and the form fields (POST).
pub(crate) struct Ctx<'a> {
    pub req: &'a ApiRequest,
    pub csrf: String,
    pub form: Vec<(String, String)>,
}

impl Ctx<'_> {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn shell<'b>(&'b self, title: &'b str) -> Shell<'b> {
        Shell {
            title,
            csrf: Some(&self.csrf),
        }
    }
}

impl Api {
    /// Every `/console...` request. Never an error answer in JSON: pages, redirects or the stylesheet.
    pub(crate) async fn console(&self, req: &ApiRequest, rest: &[&str]) -> ApiResponse {
        let m = req.method.to_ascii_uppercase();
        match (m.as_str(), rest) {
            ("GET", ["static", "console.css"]) => return stylesheet(),
            ("GET", ["login"]) => return login_page(None, 200),
            ("POST", ["login"]) => return self.login(req).await,
            _ => {}
        }
        let digest = match self.admin_digest().await {
            Ok(d) => d,
            Err(e) => return respond(503, plain_page("Console unavailable", &e.message)),
        };
        let cookie = session::cookie_from_header(req.header("cookie"));
        let session = cookie.and_then(|c| Session::verify(c, &digest, self.now()));
        let Some(session) = session else {
            return match m.as_str() {
                "GET" | "HEAD" => see_other("/console/login"),
                _ => respond(
                    403,
                    plain_page(
                        "Signed out",
                        "Your session has expired or is missing: sign in again.",
                    ),
                ),
            };
        };
        let mut ctx = Ctx {
            req,
            csrf: session.csrf_token(&digest),
            form: vec![],
        };
        if m != "GET" {
            if !session::same_origin(
                req.header("sec-fetch-site"),
                req.header("origin"),
                req.header("host"),
            ) {
                return respond(
                    403,
                    plain_page("Refused", "This request came from another site."),
                );
            }
            ctx.form = parse_query(&String::from_utf8_lossy(&req.body));
            if !session.csrf_ok(&digest, ctx.field("csrf")) {
                return respond(
                    403,
                    plain_page(
                        "Refused",
                        "The form's CSRF token is missing or wrong: reload the page and try again.",
                    ),
                );
            }
        }
        match self.console_route(&ctx, m.as_str(), rest).await {
            Ok(r) => r,
            Err(e) => respond(
                e.code.status(),
                page(
                    &ctx.shell("Error"),
                    html! {
                        h1 { "Something went wrong" }
                        (error_banner(&e.message))
                        p { a href="/console" { "Back to the projects" } }
                    },
                ),
            ),
        }
    }

    async fn console_route(
        &self,
        ctx: &Ctx<'_>,
        m: &str,
        rest: &[&str],
    ) -> Result<ApiResponse, ApiError> {
        match (m, rest) {
            ("POST", ["logout"]) => {
                let mut r = see_other("/console/login");
                r.headers
                    .push(("set-cookie".into(), session::clear_cookie()));
                Ok(r)
            }
            ("GET", []) => self.projects_page(ctx).await,
            ("GET", ["open"]) => {
                let p = ctx.req.query_param("project").unwrap_or_default().trim();
                if !super::valid_project_id(p) {
                    return Err(ApiError::invalid(
                        "a project id is 1-64 characters of A-Z, a-z, 0-9, _ and - (Amplitude's project id)",
                    ));
                }
                Ok(see_other(&format!("/console/projects/{p}")))
            }
            ("GET", ["exports"]) => self.exports_page(ctx).await,
            ("GET", ["projects", p]) => self.project_page(ctx, p).await,
            ("GET", ["projects", p, "syncs", s]) => self.sync_page(ctx, p, s).await,
            ("GET", ["projects", p, "previews", id]) => self.preview_page(ctx, p, id).await,
            ("GET", ["projects", p, "history", s]) => self.history_page(ctx, p, s).await,
            ("POST", ["projects", p, "history", s, action]) => {
                self.history_action(ctx, p, s, action).await
            }
            ("POST", ["projects", p, action]) => self.project_action(ctx, p, action).await,
            ("POST", ["projects", p, "syncs", s, action]) => {
                self.sync_action(ctx, p, s, action).await
            }
            _ => Err(ApiError::not_found("no such console page")),
        }
    }

    /// Calls a `/v1/projects/{p}/...` route in-process as the signed-in admin; the answer's JSON.
    pub(crate) async fn v1(
        &self,
        ctx: &Ctx<'_>,
        method: &str,
        project_id: &str,
        rest: &[&str],
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut req = ApiRequest::new(
            method,
            &format!("/v1/projects/{project_id}/{}", rest.join("/")),
        );
        req.query = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(b) = body {
            req = req.with_json(&b);
        }
        // The OAuth redirect_uri is built from the request's host when no callback URL is configured.
        req.domain_name = ctx.req.domain_name.clone();
        if let Some(h) = ctx.req.header("host") {
            req = req.with_header("host", h);
        }
        Ok(self
            .route_project(&req, project_id, rest)
            .await?
            .json_body())
    }

    async fn login(&self, req: &ApiRequest) -> ApiResponse {
        if !session::same_origin(
            req.header("sec-fetch-site"),
            req.header("origin"),
            req.header("host"),
        ) {
            return respond(
                403,
                plain_page("Refused", "This request came from another site."),
            );
        }
        let form = parse_query(&String::from_utf8_lossy(&req.body));
        let token = form
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let digest = match self.admin_digest().await {
            Ok(d) => d,
            Err(e) => return respond(503, plain_page("Console unavailable", &e.message)),
        };
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if token.is_empty() || !bool::from(given.ct_eq(&digest)) {
            return login_page(Some("That is not the admin token."), 401);
        }
        let s = Session::start(self.now());
        let mut r = see_other("/console");
        r.headers.push(("set-cookie".into(), s.set_cookie(&digest)));
        r
    }
}

fn stylesheet() -> ApiResponse {
    ApiResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/css; charset=utf-8".into()),
            ("cache-control".into(), "public, max-age=300".into()),
            ("x-content-type-options".into(), "nosniff".into()),
        ],
        body: layout::CSS.as_bytes().to_vec(),
    }
}

fn plain_page(title: &str, message: &str) -> maud::Markup {
    page(
        &Shell { title, csrf: None },
        html! {
            h1 { (title) }
            (error_banner(message))
            p { a href="/console/login" { "Sign in" } }
        },
    )
}

fn login_page(error: Option<&str>, status: u16) -> ApiResponse {
    respond(
        status,
        page(
            &Shell {
                title: "Sign in",
                csrf: None,
            },
            html! {
                section {
                    h1 { "Sign in" }
                    @if let Some(e) = error { (error_banner(e)) }
                    p.hint { "Paste the deployment's admin token (Secrets Manager secret "
                        code { "AdminTokenSecret" } "; the local stack prints it as " code { "admin_token" }
                        "). The browser keeps a session cookie for 8 hours, not the token." }
                    form method="post" action="/console/login" {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="current-password" required;
                        div.actions { button type="submit" { "Sign in" } }
                    }
                }
            },
        ),
    )
}
