//! lambda_http glue: API Gateway (HTTP API, payload 2.0) request → [`ApiRequest`] → [`Api::handle`] →
//! response. Both API functions run this with their own [`Routes`].

use std::sync::Arc;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};

use super::{Api, ApiRequest, ApiResponse, Routes, parse_query};

/// Converts lambda_http's request.
pub fn to_api_request(req: Request) -> ApiRequest {
    let domain_name = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.domain_name.clone(),
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.domain_name.clone(),
        _ => None,
    };
    // The raw path as API Gateway received it (the `$default` stage adds no prefix).
    let raw = req.raw_http_path();
    let path = if raw.is_empty() {
        req.uri().path().to_string()
    } else {
        raw.to_string()
    };
    let query = parse_query(req.uri().query().unwrap_or(""));
    let method = req.method().as_str().to_string();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let body = match req.body() {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.clone().into_bytes(),
        Body::Binary(b) => b.clone(),
        // Any other variant (streams) is not sent by API Gateway.
        #[allow(unreachable_patterns)]
        _ => Vec::new(),
    };
    ApiRequest {
        method,
        path,
        query,
        headers,
        body,
        domain_name,
    }
}

/// Converts the answer back.
pub fn to_lambda_response(r: ApiResponse) -> Result<Response<Body>, Error> {
    let mut b = Response::builder().status(r.status);
    for (k, v) in &r.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let body = if r.body.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(r.body) {
            Ok(s) => Body::Text(s),
            Err(e) => Body::Binary(e.into_bytes()),
        }
    };
    Ok(b.body(body)?)
}

/// Builds the API from the environment once, then serves Lambda invocations until the runtime stops.
pub async fn run(routes: Routes) -> Result<(), Error> {
    crate::init_tracing();
    let api = Arc::new(Api::from_env(routes).await?);
    lambda_http::run(service_fn(move |req: Request| {
        let api = api.clone();
        async move { to_lambda_response(api.handle(to_api_request(req)).await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API Gateway HTTP API (payload 2.0) event as Lambda delivers it.
    const EVENT: &str = r#"{
      "version": "2.0",
      "routeKey": "GET /oauth/tiktok/callback",
      "rawPath": "/oauth/tiktok/callback",
      "rawQueryString": "auth_code=abc%3D&state=s1&code=abc%3D",
      "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", "authorization": "Bearer t"},
      "queryStringParameters": {"auth_code": "abc=", "state": "s1", "code": "abc="},
      "requestContext": {
        "accountId": "123456789012", "apiId": "abc123",
        "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
        "http": {"method": "GET", "path": "/oauth/tiktok/callback", "protocol": "HTTP/1.1",
                 "sourceIp": "192.0.2.1", "userAgent": "test"},
        "requestId": "r1", "routeKey": "GET /oauth/tiktok/callback", "stage": "$default",
        "time": "26/Nov/2026:10:00:00 +0000", "timeEpoch": 1795600000000
      },
      "body": "eyJhIjoxfQ==",
      "isBase64Encoded": true
    }"#;

    #[test]
    fn http_api_event_becomes_an_api_request() {
        let req = lambda_http::request::from_str(EVENT).expect("event parses");
        let r = to_api_request(req);
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/oauth/tiktok/callback");
        assert_eq!(r.query_param("auth_code"), Some("abc="));
        assert_eq!(r.query_param("state"), Some("s1"));
        assert_eq!(r.header("Authorization"), Some("Bearer t"));
        assert_eq!(
            r.domain_name.as_deref(),
            Some("abc123.execute-api.us-east-1.amazonaws.com")
        );
        assert_eq!(r.body, br#"{"a":1}"#);
    }

    #[test]
    fn responses_keep_status_headers_and_body() {
        let resp =
            to_lambda_response(ApiResponse::json(409, &serde_json::json!({"x": 1}))).unwrap();
        assert_eq!(resp.status(), 409);
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        assert!(matches!(resp.body(), Body::Text(t) if t == r#"{"x":1}"#));
        let empty = to_lambda_response(ApiResponse::empty(204)).unwrap();
        assert!(matches!(empty.body(), Body::Empty));
    }
}
