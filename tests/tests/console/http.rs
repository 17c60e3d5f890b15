//! The console over plain HTTP: sign-in, the session cookie's attributes, and every refusal (wrong token,
//! tampered cookie, missing CSRF token, cross-site request, bearer token instead of a session).

use chrono::{TimeZone, Utc};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use super::support::{self, Stack};
use audience_sync_tests::local::exports::{Dirt, Export, amplitude_export, users};

pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

/// A form post that must be refused: its CSRF field, an extra header, what it stands for.
type Refusal<'a> = (Option<&'a str>, Option<(&'a str, &'a str)>, &'a str);

pub struct Console {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
}

/// The value of the hidden `csrf` field in a page.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field");
    let rest = &html[at + 19..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

impl Console {
    pub fn new(st: &Stack) -> Console {
        Console {
            base: st.c.ready.api.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
        }
    }

    pub async fn login(&self, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/console/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .expect("login")
    }

    pub async fn signed_in(st: &Stack) -> Console {
        let mut c = Console::new(st);
        let r = c.login(&st.c.ready.admin_token).await;
        assert_eq!(r.status(), 303);
        let set = r.headers()[SET_COOKIE].to_str().expect("ascii").to_string();
        c.cookie = Some(set.split(';').next().expect("name=value").to_string());
        c
    }

    pub async fn get(&self, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        let r = req.send().await.expect("GET");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, r.text().await.unwrap_or_default(), headers)
    }

    /// A form post with extra headers; `fields` as given (add `csrf` yourself).
    pub async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let r = self.send(path, fields, headers).await;
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// A same-origin form post, as the console's own page makes it: the status and the redirect's target.
    pub async fn submit(&self, path: &str, fields: &[(&str, &str)]) -> (u16, Option<String>) {
        let origin = self.base.clone();
        let headers = [
            ("origin", origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ];
        let r = self.send(path, fields, &headers).await;
        let location = r
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        (r.status().as_u16(), location)
    }

    async fn send(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.expect("POST")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_gives_a_strict_session_cookie_and_wrong_tokens_are_refused() {
    let st = support::start(&[]).await;
    let c = Console::new(&st);
    let (status, _, h) = c.get("/console").await;
    assert_eq!(
        (status, h[LOCATION].to_str().ok()),
        (303, Some("/console/login"))
    );

    let wrong = c.login("not-the-admin-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong.headers().get(SET_COOKIE).is_none(),
        "no session for a wrong token"
    );
    assert!(
        wrong
            .text()
            .await
            .unwrap_or_default()
            .contains("not the admin token")
    );
    assert_eq!(c.login("").await.status(), 401);

    let ok = c.login(&st.c.ready.admin_token).await;
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()[SET_COOKIE]
        .to_str()
        .expect("ascii")
        .to_string();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(
            cookie.split("; ").any(|a| a == attr),
            "{attr} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains(&st.c.ready.admin_token),
        "the cookie never holds the token"
    );

    let signed = Console::signed_in(&st).await;
    let (status, html, _) = signed.get("/console").await;
    assert_eq!(status, 200);
    assert!(html.contains("<h1>Projects</h1>"), "{html}");

    // The bearer token is the JSON API's credential, the cookie the console's: neither opens the other.
    let bearer = c
        .http
        .get(format!("{}/console", c.base))
        .bearer_auth(&st.c.ready.admin_token)
        .send()
        .await
        .expect("GET");
    assert_eq!(
        bearer.status(),
        303,
        "a bearer token is not a console session"
    );
    let api_with_cookie = c
        .http
        .get(format!("{}/v1/projects", c.base))
        .header(COOKIE, signed.cookie.clone().expect("cookie"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        api_with_cookie.status(),
        401,
        "the JSON API does not take the session cookie"
    );

    // Signing out clears the cookie.
    let (_, html, _) = signed.get("/console").await;
    let csrf = csrf_of(&html);
    let r = signed
        .http
        .post(format!("{}/console/logout", c.base))
        .header(COOKIE, signed.cookie.clone().expect("cookie"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap_or("")
            .contains("Max-Age=0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_and_foreign_cookies_are_refused() {
    let st = support::start(&[]).await;
    let mut c = Console::signed_in(&st).await;
    let good = c.cookie.clone().expect("cookie");
    // A later expiry with the old signature, a flipped signature byte, and a cookie of another deployment.
    let (name, value) = good.split_once('=').expect("name=value");
    let parts: Vec<&str> = value.split('.').collect();
    let later = format!(
        "{name}=v1.{}.{}.{}",
        parts[1].parse::<i64>().unwrap_or(0) + 86_400,
        parts[2],
        parts[3]
    );
    let mut sig = parts[3].to_string();
    let flipped = if sig.ends_with('0') { '1' } else { '0' };
    sig.pop();
    sig.push(flipped);
    let bad_sig = format!("{name}=v1.{}.{}.{sig}", parts[1], parts[2]);
    let other = Console::signed_in(&support::start(&[]).await).await;
    for cookie in [
        later,
        bad_sig,
        other.cookie.clone().expect("cookie"),
        format!("{name}=garbage"),
    ] {
        c.cookie = Some(cookie.clone());
        let (status, _, h) = c.get("/console").await;
        assert_eq!(status, 303, "{cookie} must not open the console");
        assert_eq!(h[LOCATION], "/console/login");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_need_the_csrf_token_and_the_same_origin() {
    let st = support::start(&[]).await;
    let p = support::project();
    st.c.connect(&p).await.expect("connect");
    let c = Console::signed_in(&st).await;
    let (_, page, _) = c.get(&format!("/console/projects/{p}")).await;
    let csrf = csrf_of(&page);
    let path = format!("/console/projects/{p}/mapping");
    let mapping = [("amplitude_property", "email"), ("tiktok_key", "EMAIL")];
    let with = |csrf: Option<&str>| {
        let mut v: Vec<(String, String)> = mapping
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = csrf {
            v.push(("csrf".into(), t.into()));
        }
        v
    };
    let good = Some(csrf.as_str());
    let refused: [Refusal; 5] = [
        (None, None, "no CSRF token"),
        (Some("00ff"), None, "a wrong CSRF token"),
        (
            good,
            Some(("sec-fetch-site", "cross-site")),
            "a cross-site request",
        ),
        (
            good,
            Some(("origin", "http://evil.example")),
            "another origin",
        ),
        (good, Some(("origin", "null")), "an opaque origin"),
    ];
    for (token, header, what) in refused {
        let fields = with(token);
        let fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        let (status, body) = c.post(&path, &fields, &headers).await;
        assert_eq!(status, 403, "{what} must be refused: {body}");
        assert!(
            st.integration(&p).await["mapping"].is_null(),
            "{what} changed nothing"
        );
    }
    let fields = with(good);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Without a session, even with a valid token, nothing happens.
    let anonymous = Console::new(&st);
    let (status, _) = anonymous.post(&path, &fields, &[]).await;
    assert_eq!(status, 403);
    assert!(st.integration(&p).await["mapping"].is_null());

    let origin = c.base.clone();
    let (status, body) = c
        .post(
            &path,
            &fields,
            &[
                ("origin", origin.as_str()),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(st.integration(&p).await["mapping"]["tiktok_key"], "EMAIL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_under_the_strict_csp_and_shows_the_apis_data() {
    let st = support::start(&["--tiktok-rules", support::NO_PROCESSING]).await;
    let p = support::project();
    let cohort = support::cohort();
    let sid = st.connected_on_upload_sync(&p, &cohort).await;
    let e = first_export_succeeds(&st, &p, &sid, &cohort).await;
    let api_sync = st.sync(&p, &sid).await;
    assert_eq!(
        api_sync["audience_name"],
        json!(format!("Amplitude cohort {cohort} [as:{sid}]"))
    );

    // The audience's name is editable: TikTok's audience is renamed (keeping the engine's suffix).
    let renamed =
        st.c.api(
            reqwest::Method::PATCH,
            &format!("/v1/projects/{p}/syncs/{sid}"),
            Some(json!({"audience_name": "VIP <b>buyers</b>"})),
        )
        .await
        .expect("patch");
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    let full = format!("VIP <b>buyers</b> [as:{sid}]");
    assert_eq!(renamed.body["audience_name"], json!(full));
    let audience_id = api_sync["tiktok_audience_id"].as_str().expect("audience");
    let on_tiktok =
        st.c.audience_details(audience_id)
            .await
            .expect("sandbox audience");
    assert_eq!(on_tiktok["name"], json!(full), "{on_tiktok}");

    let c = Console::signed_in(&st).await;
    let pages = [
        "/console/login".to_string(),
        "/console".to_string(),
        format!("/console/projects/{p}"),
        format!("/console/projects/{p}/syncs/{sid}"),
    ];
    for path in &pages {
        let (status, html, h) = c.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert!(!html.contains("<script"), "no script on {path}");
        assert!(
            !html.contains(" style=\""),
            "no inline style on {path} (the CSP would block it)"
        );
    }
    let (_, projects, _) = c.get("/console").await;
    assert!(
        projects.contains(&format!("/console/projects/{p}")),
        "the project is listed"
    );

    let (_, project, _) = c.get(&format!("/console/projects/{p}")).await;
    assert!(project.contains(&cohort) && project.contains("Local Advertiser One"));
    assert!(project.contains("Amplitude property <code>email</code>"));

    let (_, page, _) = c.get(&format!("/console/projects/{p}/syncs/{sid}")).await;
    let audience = api_sync["tiktok_audience_id"]
        .as_str()
        .expect("audience id");
    assert!(page.contains(audience), "the TikTok audience id is shown");
    let size = api_sync["audience_size"].as_u64().expect("audience_size");
    assert_eq!(
        size,
        e.expected.len() as u64,
        "the API's audience size is the cohort's"
    );
    assert!(
        page.contains(&group(size)),
        "the audience size {size} is shown"
    );
    assert!(page.contains(&group(e.rows)), "the run's rows are shown");
    assert!(page.contains("s-succeeded"), "the run's state is shown");
    assert!(
        page.contains("VIP &lt;b&gt;buyers&lt;/b&gt;") && !page.contains("<b>buyers"),
        "names are escaped"
    );
    // The stylesheet is the only other resource, and it is ours.
    let (status, css, h) = c.get("/console/static/console.css").await;
    assert_eq!(
        (status, h["content-type"].to_str().ok()),
        (200, Some("text/css; charset=utf-8"))
    );
    assert!(css.contains("--acc"));

    // The sync page's preview form: a candidate file (no sync picks its name up) that drops 700 of the 1,200
    // users is previewed against this sync, and the page gives the removal guard's verdict and the counts.
    let candidate = amplitude_export(
        &cohort,
        Utc.with_ymd_and_hms(2026, 11, 20, 11, 0, 0).unwrap(),
        &users(700..1_300),
        Dirt::NONE,
        false,
    );
    let key =
        st.c.upload("candidate.csv", candidate.bytes.clone())
            .await
            .expect("upload");
    let csrf = csrf_of(&page);
    let (status, location) = c
        .submit(
            &format!("/console/projects/{p}/syncs/{sid}/preview"),
            &[("csrf", csrf.as_str()), ("s3_key", key.as_str())],
        )
        .await;
    assert_eq!(status, 303, "the preview starts");
    let location = location.expect("a redirect to the preview page");
    assert!(location.starts_with(&format!("/console/projects/{p}/previews/")));
    let mut preview = String::new();
    for _ in 0..120 {
        preview = c.get(&location).await.1;
        if !preview.contains("http-equiv=\"refresh\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(preview.contains("would_refuse"), "{preview}");
    assert!(preview.contains("max_removal_ratio"), "{preview}");
    assert!(
        preview.contains(&format!("{} users committed from", group(size))),
        "{preview}"
    );
    let removes = e.expected.difference(&candidate.expected).count() as u64;
    assert!(
        preview.contains(&group(removes)),
        "{removes} removals shown: {preview}"
    );
    assert_eq!(
        st.sync(&p, &sid).await["last_run"]["run_id"],
        api_sync["last_run"]["run_id"],
        "nothing ran"
    );
}

/// Amplitude's first export of `cohort` (1,200 users, the usual dirt) lands and its run succeeds.
pub async fn first_export_succeeds(st: &Stack, p: &str, sid: &str, cohort: &str) -> Export {
    let e = amplitude_export(
        cohort,
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap(),
        &users(0..1_200),
        Dirt::USUAL,
        false,
    );
    let key = st.upload(&e).await;
    let run = st.run_of(p, sid, &key).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    e
}

/// Thousands separators as the console prints counts.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
