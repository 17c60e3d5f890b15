use std::time::Duration;

use audience_aws::SecretsVault;
use audience_core::ports::{PortError, TikTokConnection, TokenVault};
use audience_sync_tests::{TestEnv, unique_name};
use chrono::{TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};

fn vault(env: &TestEnv, ttl: Duration) -> SecretsVault {
    SecretsVault::new(
        env.clients.secrets.clone(),
        env.secret_prefix.clone(),
        format!("{}/app-credentials", env.secret_prefix),
        format!("{}/admin-token", env.secret_prefix),
        ttl,
    )
}

fn connection(token: &str) -> TikTokConnection {
    TikTokConnection {
        access_token: SecretString::from(token.to_string()),
        advertiser_ids: vec!["7000000001".into(), "7000000002".into()],
        scope_ids: vec![3, 30, 31],
        connected_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
    }
}

#[tokio::test]
async fn connect_disconnect_reconnect() {
    let env = TestEnv::new().await.expect("env");
    let v = vault(&env, Duration::from_secs(300));
    let project = unique_name("p");
    assert!(v.get_connection(&project).await.unwrap().is_none());
    v.put_connection(&project, &connection("tok-one-secret"))
        .await
        .unwrap();
    // A fresh vault (no cache) reads what was stored.
    let fresh = vault(&env, Duration::from_secs(300));
    let got = fresh
        .get_connection(&project)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(got.access_token.expose_secret(), "tok-one-secret");
    assert_eq!(got.advertiser_ids, vec!["7000000001", "7000000002"]);
    assert_eq!(got.scope_ids, vec![3, 30, 31]);
    assert_eq!(got.connected_at, connection("x").connected_at);
    // The token never shows in Debug.
    assert!(!format!("{got:?}").contains("tok-one-secret"));
    assert!(!format!("{v:?}").contains("tok-one-secret"));
    // The secret's name.
    let name = v.secret_name(&project);
    assert_eq!(name, format!("{}/tiktok/{project}", env.secret_prefix));
    env.clients
        .secrets
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .unwrap();

    // Disconnect (force delete), then reconnect with a new token.
    v.delete_connection(&project).await.unwrap();
    v.delete_connection(&project).await.unwrap(); // missing is fine
    assert!(v.get_connection(&project).await.unwrap().is_none());
    assert!(
        vault(&env, Duration::from_secs(300))
            .get_connection(&project)
            .await
            .unwrap()
            .is_none()
    );
    v.put_connection(&project, &connection("tok-two-secret"))
        .await
        .unwrap();
    let got = vault(&env, Duration::from_secs(300))
        .get_connection(&project)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.access_token.expose_secret(), "tok-two-secret");
    // Replacing an existing secret overwrites it.
    v.put_connection(&project, &connection("tok-three-secret"))
        .await
        .unwrap();
    let got = vault(&env, Duration::from_secs(300))
        .get_connection(&project)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.access_token.expose_secret(), "tok-three-secret");
}

#[tokio::test]
async fn reconnect_while_the_old_secret_is_scheduled_for_deletion() {
    let env = TestEnv::new().await.expect("env");
    let v = vault(&env, Duration::from_secs(300));
    let project = unique_name("p");
    v.put_connection(&project, &connection("old-token-value"))
        .await
        .unwrap();
    // What AWS shows while a deletion is pending: the name is taken but the secret unusable. moto deletes a
    // force-deleted secret at once, so schedule the deletion with a recovery window instead.
    env.clients
        .secrets
        .delete_secret()
        .secret_id(v.secret_name(&project))
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let probe = env
        .clients
        .secrets
        .create_secret()
        .name(v.secret_name(&project))
        .secret_string("{}")
        .send()
        .await;
    assert!(
        probe.is_err(),
        "moto must refuse to create a secret that is scheduled for deletion"
    );
    let described = env
        .clients
        .secrets
        .describe_secret()
        .secret_id(v.secret_name(&project))
        .send()
        .await
        .unwrap();
    assert!(
        described.deleted_date.is_some(),
        "the secret is scheduled for deletion"
    );
    let fresh = vault(&env, Duration::from_secs(300));
    assert!(fresh.get_connection(&project).await.unwrap().is_none());
    v.put_connection(&project, &connection("new-token-value"))
        .await
        .unwrap();
    let got = vault(&env, Duration::from_secs(300))
        .get_connection(&project)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.access_token.expose_secret(), "new-token-value");
    let described = env
        .clients
        .secrets
        .describe_secret()
        .secret_id(v.secret_name(&project))
        .send()
        .await
        .unwrap();
    assert!(
        described.deleted_date.is_none(),
        "restored, no longer scheduled for deletion"
    );
}

#[tokio::test]
async fn cache_serves_until_invalidated_or_expired() {
    let env = TestEnv::new().await.expect("env");
    let project = unique_name("p");
    let v = vault(&env, Duration::from_secs(300));
    v.put_connection(&project, &connection("first-token"))
        .await
        .unwrap();
    assert_eq!(
        v.get_connection(&project)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "first-token"
    );
    // Changed behind the vault's back (another function reconnected the project).
    vault(&env, Duration::from_secs(300))
        .put_connection(&project, &connection("second-token"))
        .await
        .unwrap();
    assert_eq!(
        v.get_connection(&project)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "first-token"
    );
    v.invalidate(&project);
    assert_eq!(
        v.get_connection(&project)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "second-token"
    );

    // A zero TTL never serves from the cache.
    let uncached = vault(&env, Duration::ZERO);
    assert_eq!(
        uncached
            .get_connection(&project)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "second-token"
    );
    vault(&env, Duration::from_secs(300))
        .put_connection(&project, &connection("third-token"))
        .await
        .unwrap();
    assert_eq!(
        uncached
            .get_connection(&project)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "third-token"
    );
}

#[tokio::test]
async fn app_credentials_and_admin_token() {
    let env = TestEnv::new().await.expect("env");
    let v = vault(&env, Duration::from_secs(300));
    assert!(matches!(
        v.app_credentials().await,
        Err(PortError::Config(_))
    ));
    assert!(matches!(v.admin_token().await, Err(PortError::Config(_))));
    let sm = &env.clients.secrets;
    // As infra/template.yaml creates it: a secret without any value, then the operator's put-secret-value.
    sm.create_secret()
        .name(format!("{}/app-credentials", env.secret_prefix))
        .send()
        .await
        .unwrap();
    let err = v.app_credentials().await.unwrap_err();
    assert!(
        matches!(&err, PortError::Config(m) if m.contains("no value yet")),
        "{err}"
    );
    sm.put_secret_value()
        .secret_id(format!("{}/app-credentials", env.secret_prefix))
        .secret_string(r#"{"app_id":"7100000000000000001","secret":"app-secret-value"}"#)
        .send()
        .await
        .unwrap();
    sm.create_secret()
        .name(format!("{}/admin-token", env.secret_prefix))
        .secret_string("admin-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    let creds = v.app_credentials().await.unwrap();
    assert_eq!(creds.app_id, "7100000000000000001");
    assert_eq!(creds.secret.expose_secret(), "app-secret-value");
    assert!(!format!("{creds:?}").contains("app-secret-value"));
    assert_eq!(
        v.admin_token().await.unwrap().expose_secret(),
        "admin-token-0123456789abcdef"
    );

    // A generated secret in JSON form works too.
    sm.put_secret_value()
        .secret_id(format!("{}/admin-token", env.secret_prefix))
        .secret_string(r#"{"token":"json-admin-token-abcdef0123"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        v.admin_token().await.unwrap().expose_secret(),
        "json-admin-token-abcdef0123"
    );

    // A malformed secret is a clear error that does not quote its content.
    sm.put_secret_value()
        .secret_id(format!("{}/app-credentials", env.secret_prefix))
        .secret_string(r#"{"app_id": 5, "secret": "leaky-secret-value"}"#)
        .send()
        .await
        .unwrap();
    let err = v.app_credentials().await.unwrap_err();
    assert!(matches!(err, PortError::Corrupt(_)), "{err}");
    assert!(!err.to_string().contains("leaky"), "{err}");
}
