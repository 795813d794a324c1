//! Operations: liveness, readiness, metrics and the OpenAPI document.

use std::time::Duration;

use actix_web::{HttpResponse, ResponseError as _, web};
use hotaru_log::EventLog as _;

use crate::{ApiError, Gateway, OPENAPI};

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

pub(crate) async fn readyz(g: web::Data<Gateway>) -> HttpResponse {
    match tokio::time::timeout(
        Duration::from_secs(2),
        g.log.head(hotaru_events::Context::Registration),
    )
    .await
    {
        Ok(Ok(_)) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        _ => ApiError::new(503, "UNAVAILABLE", "the event log is not reachable").error_response(),
    }
}

/// The operators' metrics, behind the operator key: its counters move with real uploads
/// and redemptions and not with chaff, so a public `/metrics` would tell anyone polling it
/// which request was real.
pub(crate) async fn metrics_text(
    g: web::Data<Gateway>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    if let Err(e) =
        crate::auth::authorise(&g, &req, hotaru_server::credentials::Role::Operator).await
    {
        return e.error_response();
    }
    let newest = g
        .distribution
        .published()
        .await
        .ok()
        .and_then(|v| v.newest_end);
    let age = newest.map(|end| g.clock.now().0.saturating_sub(end.0) as f64 / 1000.0);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(g.metrics.render(age))
}
pub(crate) async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}
