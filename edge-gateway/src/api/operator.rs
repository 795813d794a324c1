//! The operator API: sign a batch now.

use actix_web::{HttpRequest, HttpResponse, web};
use hotaru_server::commands::CommandError;
use hotaru_server::credentials::Role;

use crate::auth::authorise;
use crate::error::command_error;
use crate::{ApiError, Gateway};

pub(crate) async fn sign_batches(
    g: web::Data<Gateway>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    authorise(&g, &req, Role::Operator).await?;
    let signed = g.commands.sign_now().await;
    // The batch may have been signed by another node: this gateway's view reads it now.
    g.distribution.invalidate_view();
    let batches = match signed {
        Ok(Some(b)) => vec![serde_json::json!({
            "batchId": b.batch_id,
            "keys": b.key_count,
            "paddingKeys": b.padding_count,
            "files": b.files,
        })],
        Ok(None) | Err(CommandError::Batch(hotaru_server::BatchError::Fenced)) => vec![],
        Err(e) => return Err(command_error(&g, e)),
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batches": batches })))
}
