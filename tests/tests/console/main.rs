//! The web console, black box: `audience-sync-local` (the binary) serves it; `http` talks to it with a plain
//! HTTP client (headers, cookies, refusals), `browser` drives headless Chromium through a user's whole flow,
//! `history` keeps a disconnected project's run history.

mod browser;
mod history;
mod http;
// The end-to-end tests' stack launcher (shared, not every helper is used here).
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;
