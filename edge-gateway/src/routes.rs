//! The routes: every path the gateway serves, its body limits and the request metrics.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};

use crate::api::{centre, device, exports, health, operator, publish, support};
use crate::{ApiError, Gateway, UPLOAD_BODY_LIMIT};

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let upload_json = web::JsonConfig::default()
        .limit(UPLOAD_BODY_LIMIT)
        .error_handler(json_error);
    let small_json = web::JsonConfig::default()
        .limit(4 * 1024)
        .error_handler(json_error);
    cfg.service(
        web::resource("/v3/diagnosis")
            .app_data(upload_json)
            .route(web::put().to(device::diagnosis_v3)),
    )
    .service(web::resource("/v1/publish").route(web::post().to(publish::publish_v1)))
    .service(
        web::resource("/v1/cases")
            .app_data(small_json.clone())
            .route(web::post().to(centre::confirm_case)),
    )
    .service(
        web::resource("/v1/cases/{case_id}/processing-number")
            .route(web::post().to(centre::issue_number)),
    )
    .service(web::resource("/v1/admin/batches").route(web::post().to(operator::sign_batches)))
    .service(
        web::resource("/v1/logs")
            .app_data(
                web::JsonConfig::default()
                    .limit(UPLOAD_BODY_LIMIT)
                    .error_handler(json_error),
            )
            .route(web::post().to(support::upload_log)),
    )
    .service(
        web::resource("/v1/admin/logs/{log_id}/close").route(web::post().to(support::close_log)),
    )
    .service(
        web::resource("/v1/exposure-configuration")
            .route(web::get().to(exports::exposure_configuration)),
    )
    .service(
        web::resource("/exports/index.txt")
            .route(web::get().to(exports::index_txt))
            .route(web::head().to(exports::index_txt)),
    )
    .service(
        web::resource("/exports/{region}/{file}")
            .route(web::get().to(exports::export_file))
            .route(web::head().to(exports::export_file)),
    )
    .service(web::resource("/healthz").route(web::get().to(health::healthz)))
    .service(web::resource("/readyz").route(web::get().to(health::readyz)))
    .service(web::resource("/openapi.json").route(web::get().to(health::openapi)))
    .service(web::resource("/metrics").route(web::get().to(health::metrics_text)))
    .default_service(web::to(not_found));
}

/// The routes as (method, path) pairs, as the OpenAPI test checks them.
pub const ROUTES: &[(&str, &str)] = &[
    ("put", "/v3/diagnosis"),
    ("post", "/v1/publish"),
    ("post", "/v1/cases"),
    ("post", "/v1/cases/{caseId}/processing-number"),
    ("post", "/v1/admin/batches"),
    ("post", "/v1/logs"),
    ("post", "/v1/admin/logs/{logId}/close"),
    ("get", "/v1/exposure-configuration"),
    ("get", "/exports/index.txt"),
    ("head", "/exports/index.txt"),
    ("get", "/exports/{region}/{file}"),
    ("head", "/exports/{region}/{file}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/openapi.json"),
    ("get", "/metrics"),
];

fn json_error(err: actix_web::error::JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let e = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => {
            ApiError::new(413, "BODY_TOO_LARGE", "the request body is too large")
        }
        E::ContentType => ApiError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        E::Deserialize(d) => ApiError::bad_request("INVALID_JSON", format!("invalid body: {d}")),
        _ => ApiError::bad_request("INVALID_JSON", "the body could not be read"),
    };
    e.into()
}

/// Wrap the app with this: every 4xx and 5xx that is not already the contract's JSON (an
/// answer actix writes itself: a wrong method's empty 405, a body over a cap read as bytes,
/// a malformed request line's 400) is answered `{code, message}` as `docs/api-errors.md`
/// says, keeping the original's other headers.
pub fn json_errors<B: actix_web::body::MessageBody + 'static>()
-> actix_web::middleware::ErrorHandlers<B> {
    actix_web::middleware::ErrorHandlers::new().default_handler(as_contract_error)
}

fn as_contract_error<B: actix_web::body::MessageBody + 'static>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::http::header;
    use actix_web::middleware::ErrorHandlerResponse;
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status.as_u16() {
        404 => ("NO_ROUTE", "no such path"),
        405 => ("METHOD_NOT_ALLOWED", "this path does not take this method"),
        413 => ("BODY_TOO_LARGE", "the request body is too large"),
        415 => (
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        ),
        s if s >= 500 => ("INTERNAL", "a server fault"),
        _ => ("BAD_REQUEST", "the request could not be read"),
    };
    let (req, original) = res.into_parts();
    let mut answer = ApiError::new(status.as_u16(), code, message).error_response();
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let res = actix_web::dev::ServiceResponse::new(req, answer);
    Ok(ErrorHandlerResponse::Response(res.map_into_right_body()))
}

/// The answer for a path no route serves (distinct from a route's own NOT_FOUND).
async fn not_found() -> HttpResponse {
    ApiError::new(404, "NO_ROUTE", "no such path").error_response()
}

/// Wrap the app with this to count requests by route pattern and status.
pub async fn observe(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<Gateway>>()
        .map(|g| g.metrics.clone());
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        m.observe(&route, res.status().as_u16(), started.elapsed());
    }
    Ok(res)
}
