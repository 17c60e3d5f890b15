//! A person's whole flow in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by `make browser-deps`, part of `make test`) driven over WebDriver. Sign-in → connect (TikTok's
//! consent page, the callback, back to the console) → map → create a sync → an export lands → the run and the
//! audience size show. Refusals are checked in the same browser: a wrong token, a form without its CSRF
//! token, and a cross-site form post from another site's page.
//!
//! `CONSOLE_SCREENSHOTS=<dir>` saves the README's screenshots of the main pages.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use super::support::{self, Stack};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed with the test.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn driver() -> Driver {
    for tool in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is missing: run `make browser-deps` (Debian's chromium and chromium-driver)"
        );
    }
    let port = free_port();
    let mut cmd = Command::new(CHROMEDRIVER);
    cmd.arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    audience_sync_tests::moto::die_with_parent(&mut cmd);
    let child = cmd.spawn().expect("chromedriver starts");
    let d = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{}/status", d.url)).send().await
            && r.status().is_success()
        {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on {}", d.url);
}

async fn browser(d: &Driver) -> Client {
    let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1100", "--no-first-run", "--password-store=basic"]
        }
    }))
    .expect("capabilities");
    ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&d.url)
        .await
        .expect("a Chromium session")
}

async fn fill(b: &Client, css: &str, value: &str) {
    let e = b
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.ok();
    e.send_keys(value).await.expect("typing");
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .expect("click");
}

async fn source(b: &Client) -> String {
    b.source().await.expect("page source")
}

/// The page once it contains `needle`: a click that submits a form returns before the next page has loaded,
/// so every step waits for the page it leads to (bounded).
async fn wait_for(b: &Client, needle: &str) -> String {
    let mut html = String::new();
    for _ in 0..200 {
        html = source(b).await;
        if html.contains(needle) {
            return html;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never showed {needle:?}: {html}");
}

async fn shot(b: &Client, name: &str) {
    if let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") {
        let png = b.screenshot().await.expect("screenshot");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png)
            .expect("write png");
    }
}

/// Reloads a page until `done` holds on its source (the runner works asynchronously); bounded.
async fn reload_until(b: &Client, url: &str, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..240 {
        b.goto(url).await.expect("goto");
        let html = source(b).await;
        if done(&html) {
            return html;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{url} never showed what was expected: {}", source(b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_connects_maps_creates_a_sync_and_sees_its_run() {
    let st = support::start(&["--tiktok-rules", support::NO_PROCESSING]).await;
    let d = driver().await;
    let b = browser(&d).await;
    let result = flow(&st, &b).await;
    b.close().await.ok();
    result.unwrap_or_else(|e| panic!("{e}\nstack log: {}", support::log_tail(&st.log)));
}

async fn flow(st: &Stack, b: &Client) -> Result<(), String> {
    let base = st.c.ready.api.clone();
    let p = support::project();
    let cohort = support::cohort();

    // Sign-in: the console sends a signed-out browser to the sign-in page; a wrong token is refused.
    b.goto(&format!("{base}/console"))
        .await
        .map_err(|e| e.to_string())?;
    assert!(
        b.current_url()
            .await
            .map(|u| u.path() == "/console/login")
            .unwrap_or(false)
    );
    shot(b, "sign-in").await;
    fill(b, "#token", "wrong-token").await;
    click(b, "button[type=submit]").await;
    wait_for(b, "That is not the admin token.").await;
    fill(b, "#token", &st.c.ready.admin_token).await;
    click(b, "button[type=submit]").await;
    wait_for(b, "<h1>Projects</h1>").await;

    // Open the project and connect it through TikTok's consent page and the OAuth callback.
    fill(b, "#project", &p).await;
    click(b, "form[action='/console/open'] button").await;
    wait_for(b, "Connect TikTok").await;
    click(b, "form[action$='/connect'] button").await;
    wait_for(b, "Continue to TikTok").await;
    click(b, "#continue-to-tiktok").await;
    wait_for(b, "TikTok connected").await;
    click(b, "a[href^='/console/projects/']").await;
    let page = wait_for(b, "s-connected").await;
    assert!(
        page.contains("s-connected") && page.contains(&st.advertiser()),
        "{page}"
    );

    // A form whose CSRF field was removed is refused, and nothing changes.
    b.execute("document.querySelectorAll('form[action$=\"/mapping\"] input[name=csrf]').forEach(e => e.remove())", vec![])
        .await
        .map_err(|e| e.to_string())?;
    fill(b, "#amplitude_property", "email").await;
    click(b, "form[action$='/mapping'] button").await;
    wait_for(b, "CSRF token is missing or wrong").await;
    assert!(st.integration(&p).await["mapping"].is_null());

    // The key mapping, then a sync.
    b.goto(&format!("{base}/console/projects/{p}"))
        .await
        .map_err(|e| e.to_string())?;
    fill(b, "#amplitude_property", "email").await;
    click(b, "form[action$='/mapping'] button").await;
    wait_for(b, "Key mapping saved.").await;
    shot(b, "project").await;
    fill(b, "#cohort_id", &cohort).await;
    click(b, "form[action$='/syncs'] button").await;
    wait_for(b, "Sync created.").await;
    let sync_url = b.current_url().await.map_err(|e| e.to_string())?;
    let sid = sync_url
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(st.sync(&p, &sid).await["cohort_id"], json!(cohort));

    // Amplitude's export lands; the page shows the run and the audience size.
    let e = super::http::first_export_succeeds(st, &p, &sid, &cohort).await;
    let size = super::http::group(e.expected.len() as u64);
    let page = reload_until(b, sync_url.as_str(), |h| {
        h.contains("s-succeeded") && h.contains(&size)
    })
    .await;
    let audience = st.sync(&p, &sid).await["tiktok_audience_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !audience.is_empty() && page.contains(&audience),
        "the TikTok audience id is shown"
    );
    shot(b, "sync").await;
    b.goto(&format!("{base}/console"))
        .await
        .map_err(|e| e.to_string())?;
    shot(b, "projects").await;

    cross_site_post(st, b, &p, &sid, &sync_url).await
}

/// Another site's page posts the delete form (with a valid CSRF token, even) to the console: the browser
/// withholds the SameSite=Strict cookie and marks the request cross-site; the sync survives.
async fn cross_site_post(
    st: &Stack,
    b: &Client,
    p: &str,
    sid: &str,
    sync_url: &url::Url,
) -> Result<(), String> {
    b.goto(sync_url.as_str()).await.map_err(|e| e.to_string())?;
    let csrf = super::http::csrf_of(&source(b).await);
    let target = format!("{}/console/projects/{p}/syncs/{sid}/delete", st.c.ready.api);
    let evil = format!(
        "<!doctype html><form id=f method=post action=\"{target}\">\
         <input name=csrf value=\"{csrf}\"><input name=confirm value=yes></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || async move { axum::response::Html(evil) }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // `localhost` is another site than `127.0.0.1` (the console's host).
    b.goto(&format!("http://localhost:{port}/"))
        .await
        .map_err(|e| e.to_string())?;
    let mut landed = String::new();
    for _ in 0..100 {
        landed = source(b).await;
        if landed.contains("Refused") || landed.contains("Signed out") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.abort();
    assert!(
        landed.contains("Refused") || landed.contains("Signed out"),
        "the cross-site post was answered: {landed}"
    );
    let still = st.c.get(&format!("/v1/projects/{p}/syncs/{sid}")).await;
    assert!(
        still.is_ok(),
        "the sync survives a cross-site post: {still:?}"
    );

    // The same delete from the console's own page works (the checks refuse only what they should).
    b.goto(sync_url.as_str()).await.map_err(|e| e.to_string())?;
    click(b, "form[action$='/delete'] input[name=confirm]").await;
    click(b, "form[action$='/delete'] button").await;
    wait_for(b, "Sync deleted").await;
    assert!(
        st.c.get(&format!("/v1/projects/{p}/syncs/{sid}"))
            .await
            .is_err()
    );
    Ok(())
}
