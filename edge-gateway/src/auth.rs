//! Who may call: bearer API keys of health centres and operators.

use actix_web::HttpRequest;
use actix_web::http::header;
use hotaru_server::credentials::{self, Role};

use crate::{ApiError, Gateway};

pub(crate) fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(crate) async fn authorise(g: &Gateway, req: &HttpRequest, role: Role) -> Result<u32, ApiError> {
    let key = bearer(req).ok_or_else(ApiError::unauthorized)?;
    credentials::verify(&g.log, role, key)
        .await
        .map_err(ApiError::from_log)?
        .ok_or_else(ApiError::unauthorized)
}
