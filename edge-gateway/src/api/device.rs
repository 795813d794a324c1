//! COCOA's v3 upload (`PUT /v3/diagnosis`).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use hotaru_server::Redemption;

use crate::chaff::{answer_size, is_chaff, padded_json, record_real, request_bytes};
use crate::error::command_error;
use crate::wire::{DiagnosisAnswer, DroppedJson, V3Diagnosis, V3Key};
use crate::{ApiError, Gateway};

/// COCOA's v3 upload. The case's onset or sample date comes from the health centre; the
/// device's `hasSymptom` and `onsetOfSymptomOrTestDate` are checked for form only.
pub(crate) async fn diagnosis_v3(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Json<V3Diagnosis>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let source = g.limits.source(&req, g.clock.now());
    g.limits.admit(source)?;
    let body = body.into_inner();
    if let Some(d) = &body.onset_of_symptom_or_test_date
        && d.parse::<jiff::Timestamp>().is_err()
    {
        return Err(ApiError::bad_request(
            "INVALID_DATE",
            "onsetOfSymptomOrTestDate must be an RFC 3339 time",
        ));
    }
    let _ = body.has_symptom;
    let keys: Vec<_> = body.keys.iter().map(V3Key::submitted).collect();
    let size = answer_size(request_bytes(&req, keys.len()));
    if is_chaff(&req) {
        // The same parsing as a real upload and the limiter's verdict on it: refused (C)
        // when a real one would be; else the answer a success would get, of the same size,
        // after a latency drawn from the real ones.
        if let Err(e) = g.commands.attempt_verdict(source).await {
            g.chaff_refused.wait(started).await;
            return Err(command_error(&g, e));
        }
        g.chaff.wait(started).await;
        let answer = DiagnosisAnswer {
            accepted: keys.len().min(30) as u16,
            dropped: Vec::new(),
            padding: String::new(),
        };
        return Ok(padded_json(StatusCode::OK, size, answer, |a, p| {
            a.padding = p
        }));
    }
    let answer = g
        .commands
        .redeem(Redemption {
            number: body.verification_payload,
            keys,
            idempotency_key: body.idempotency_key,
            source,
        })
        .await;
    record_real(&g, started, &answer);
    let answer = answer.map_err(|e| {
        let e = command_error(&g, e);
        g.metrics.redemption(e.code);
        e
    })?;
    g.metrics.redemption("ok");
    let answer = DiagnosisAnswer {
        accepted: answer.accepted,
        dropped: answer
            .dropped
            .iter()
            .map(|d| DroppedJson {
                index: d.index,
                reason: format!("{:?}", d.reason),
            })
            .collect(),
        padding: String::new(),
    };
    Ok(padded_json(StatusCode::OK, size, answer, |a, p| {
        a.padding = p
    }))
}

// ---- Google's v1 publish API ----
