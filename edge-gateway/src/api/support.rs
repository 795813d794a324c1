//! Support: devices send operation logs with consent; support closes (deletes) them.

use actix_web::{HttpRequest, HttpResponse, web};
use hotaru_server::credentials::Role;

use crate::auth::authorise;
use crate::error::command_error;
use crate::wire::LogUpload;
use crate::{ApiError, Gateway};

/// A device sends its operation log, with the user's consent. Anything shaped like
/// personal data is refused with the reason, and nothing is stored.
pub(crate) async fn upload_log(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<LogUpload>,
) -> Result<HttpResponse, ApiError> {
    g.limits.admit(g.limits.source(&req, g.clock.now()))?;
    if !body.consent {
        return Err(ApiError::bad_request(
            "CONSENT_REQUIRED",
            "a log is accepted only with the user's consent",
        ));
    }
    if body.log.trim().is_empty() {
        return Err(ApiError::bad_request("EMPTY_LOG", "the log is empty"));
    }
    if let Some((kind, at)) = hotaru_domain::personal::find_personal_text(&body.log) {
        return Err(ApiError::bad_request(
            "LOG_HAS_PERSONAL_DATA",
            format!(
                "the log contains something shaped like {} (near byte {at}); remove it and send again",
                kind.name()
            ),
        ));
    }
    let id = g
        .commands
        .receive_log(body.into_inner().log.into_bytes())
        .await
        .map_err(|e| command_error(&g, e))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "logId": hex::encode(id.0) })))
}

/// Support closes the investigation: the log is deleted (OperationLogDeleted).
pub(crate) async fn close_log(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorise(&g, &req, Role::Operator).await?;
    let id = crate::wire::path_id(&path)
        .ok_or_else(|| ApiError::new(404, "LOG_NOT_FOUND", "no open log with this ID"))?;
    let closed = g
        .commands
        .close_log(hotaru_events::domain::LogId(id))
        .await
        .map_err(|e| command_error(&g, e))?;
    if !closed {
        return Err(ApiError::new(
            404,
            "LOG_NOT_FOUND",
            "no open log with this ID",
        ));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "logId": path.as_str(), "deleted": true })))
}
