//! No token or app secret reaches a log line or `Debug`/`Display` output. Every log record of this process
//! (the client's, reqwest's and hyper's, at TRACE) is captured while the client goes through OAuth, calls
//! that carry the secret in a query string, retries, transport failures and error answers.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use audience_core::ports::{RateGate, RateGateError};
use audience_tiktok::{AppSecret, ClientConfig, ErrorAction, ExposeSecret, TikTokClient};
use common::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct OpenGate;

#[async_trait::async_trait]
impl RateGate for OpenGate {
    async fn acquire(&self) -> Result<(), RateGateError> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_and_secrets_never_reach_logs_or_debug() {
    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let sb = sandbox().await;
    let cfg = ClientConfig {
        host: sb.base_url.clone(),
        rate_per_second: 1000.0,
        retry: fast_retry(3),
        rate_gate: Some(Arc::new(OpenGate)),
        ..ClientConfig::default()
    };
    let c = TikTokClient::new(cfg.clone()).unwrap();
    let secret = AppSecret::new(sb.secret().to_string());
    let code = consent_code(&sb, &c, sb.app_id()).await;
    let grant = c
        .exchange_auth_code(sb.app_id(), &secret, &code)
        .await
        .expect("exchange");
    let token = grant.data.access_token.clone();
    let token_str = token.expose_secret().to_string();
    assert!(token_str.len() >= 32 && sb.secret().len() >= 32);

    let mut outputs: Vec<String> = Vec::new();
    outputs.push(format!("{grant:?}"));
    outputs.push(format!("{token:?} {secret:?} {cfg:?} {c:?}"));
    outputs.push(format!("{:?}", grant.data));

    // The secret travels in the query of oauth2/advertiser/get/: fail that call at the transport level
    // (dropped connection) and with HTTP errors, and keep the errors' Debug and Display.
    for faults in [
        json!({"drop_before_apply_rate": 1.0}),
        json!({"rate": 1.0, "http_errors": [502]}),
        json!({"rate": 1.0, "codes": [50000]}),
    ] {
        set_faults(&sb, faults).await;
        let e = c
            .authorized_advertisers(&token, sb.app_id(), &secret)
            .await
            .expect_err("faulted");
        assert!(e.action().is_retryable());
        outputs.push(format!("{e:?} {e}"));
    }
    clear_faults(&sb).await;
    c.authorized_advertisers(&token, sb.app_id(), &secret)
        .await
        .expect("advertisers");
    // A connection refused (nothing listening) carries the URL in reqwest's error text.
    let dead = TikTokClient::new(ClientConfig {
        host: "http://127.0.0.1:9".into(),
        retry: fast_retry(2),
        ..ClientConfig::default()
    })
    .unwrap();
    let e = dead
        .authorized_advertisers(&token, sb.app_id(), &secret)
        .await
        .expect_err("nothing listens");
    assert_eq!(e.action(), ErrorAction::Retry);
    outputs.push(format!("{e:?} {e}"));
    // Error answers and retried calls.
    let wrong = c
        .exchange_auth_code(sb.app_id(), &secret, "used-or-wrong")
        .await
        .expect_err("bad code");
    outputs.push(format!("{wrong:?} {wrong}"));
    c.revoke_token(sb.app_id(), &secret, &token)
        .await
        .expect("revoke");
    let revoked = c.user_info(&token).await.expect_err("revoked");
    outputs.push(format!("{revoked:?} {revoked}"));

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    if std::env::var_os("SHOW_CAPTURED_LOGS").is_some() {
        eprintln!("{text}");
    }
    // The capture is real: it holds the client's retry warnings and transport-level records.
    assert!(
        text.contains("TikTok call failed; retrying"),
        "client logs captured"
    );
    assert!(text.lines().count() > 20, "library logs captured:\n{text}");
    for (what, needle) in [("token", token_str.as_str()), ("secret", sb.secret())] {
        assert!(!text.contains(needle), "{what} appears in the logs");
        for o in &outputs {
            assert!(!o.contains(needle), "{what} appears in: {o}");
        }
    }
    assert!(
        outputs[1].contains("AccessToken([REDACTED])")
            && outputs[1].contains("AppSecret([REDACTED])")
    );
}
