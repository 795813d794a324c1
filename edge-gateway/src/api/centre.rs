//! The health-centre API: confirm a case, issue its processing number.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hotaru_events::domain::{CaseBasis, CaseId, CentreId, Day};
use hotaru_server::credentials::Role;

use crate::auth::authorise;
use crate::error::command_error;
use crate::wire::CaseRequest;
use crate::{ApiError, Gateway};

fn parse_day(s: &str) -> Result<Day, ApiError> {
    let d: jiff::civil::Date = s
        .parse()
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "dates are YYYY-MM-DD"))?;
    let secs = d
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "date out of range"))?
        .timestamp()
        .as_second();
    u32::try_from(secs / 86_400)
        .map(Day)
        .map_err(|_| ApiError::bad_request("INVALID_DATE", "date out of range"))
}

pub(crate) async fn confirm_case(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<CaseRequest>,
) -> Result<HttpResponse, ApiError> {
    let centre = authorise(&g, &req, Role::Centre).await?;
    let basis = match (&body.symptom_onset_date, &body.sample_date) {
        (Some(d), None) => CaseBasis::SymptomOnset(parse_day(d)?),
        (None, Some(d)) => CaseBasis::Sample(parse_day(d)?),
        _ => {
            return Err(ApiError::bad_request(
                "INVALID_CASE",
                "give exactly one of symptomOnsetDate and sampleDate",
            ));
        }
    };
    let case_id = g
        .commands
        .confirm_case(CentreId(centre), basis)
        .await
        .map_err(|e| command_error(&g, e))?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "caseId": hex::encode(case_id.0) })))
}

pub(crate) async fn issue_number(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let centre = authorise(&g, &req, Role::Centre).await?;
    let id = crate::wire::path_id(&path)
        .ok_or_else(|| ApiError::new(404, "CASE_NOT_FOUND", "no such case"))?;
    let issued = g
        .commands
        .issue_number(CentreId(centre), CaseId(id))
        .await
        .map_err(|e| command_error(&g, e))?;
    let expires = jiff::Timestamp::from_millisecond(issued.expires_at.0 as i64)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "processingNumber": issued.number.as_str(),
            "expiresAt": expires.to_string(),
        })))
}

// ---- device API ----
