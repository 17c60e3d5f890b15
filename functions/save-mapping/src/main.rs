//! save-mapping Lambda: thin handler. Config, AWS clients, adapters and the TikTok client are built once per
//! execution environment; each request goes to `audience_app::api` (every `/v1` route except `connect`).

use audience_app::api::Routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    audience_app::api::lambda::run(Routes::SaveMapping).await
}
