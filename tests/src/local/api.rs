//! The HTTP API of the local stack: a plain HTTP server in front of the same router the `oauth-callback` and
//! `save-mapping` functions run (`audience_app::api::Api`, all routes).

use std::sync::Arc;

use audience_app::api::{Api, ApiRequest, parse_query};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use tracing::debug;

pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(serve).with_state(api)
}

async fn serve(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = ApiRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: parse_query(uri.query().unwrap_or_default()),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
        domain_name: None,
    };
    let answer = api.handle(req).await;
    // The path only: query strings carry OAuth codes and states.
    debug!(method = %method, path = %uri.path(), status = answer.status, "api request");
    let mut resp = Response::new(Body::from(answer.body));
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
