//! oauth-callback Lambda: thin handler. Config, AWS clients, adapters and the TikTok client are built once per
//! execution environment; each request goes to `audience_app::api` (routes: `POST /v1/projects/{id}/connect`,
//! `GET /oauth/tiktok/callback`).

use audience_app::api::Routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    audience_app::api::lambda::run(Routes::OAuthCallback).await
}
