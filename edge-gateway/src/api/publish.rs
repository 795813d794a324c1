//! Google's v1 publish API (`POST /v1/publish`).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError as _, web};
use base64::Engine as _;
use hotaru_domain::upload::SubmittedKey;
use hotaru_server::Redemption;

use crate::chaff::{answer_size, chaff_token, is_chaff, padded_json, record_real};
use crate::error::command_error;
use crate::wire::{PublishKey, PublishRequest, PublishResponse};
use crate::{ApiError, Gateway, UPLOAD_BODY_LIMIT};

/// Errors of the publish API carry Google's fields (`error`, `code`) and Hotaru's
/// (`code`, `message`), padded like every answer to `size` (see `answer_size`).
fn publish_error(e: ApiError, size: usize) -> HttpResponse {
    let answer = PublishResponse {
        error: e.message.clone(),
        code: e.code.to_owned(),
        message: e.message.clone(),
        ..Default::default()
    };
    let mut r = padded_json(e.status_code(), size, answer, |a, p| a.padding = p);
    if let Some(s) = e.retry_after
        && let Ok(v) = actix_web::http::header::HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, v);
    }
    r
}

/// Google's v1 publish has no idempotency key: one is derived from what the request
/// submits (the number and its keys, in any order), so a retry after a lost reply gets
/// the first answer and a revision token naming the keys stored, instead of "number
/// wrong". Another set of keys with the same number is another request: error B.
fn idempotency_of(p: &PublishRequest) -> String {
    let mut keys: Vec<String> = p
        .temporary_exposure_keys
        .iter()
        .map(|k| {
            format!(
                "{}/{}/{}/{:?}",
                k.key, k.rolling_start_number, k.rolling_period, k.transmission_risk
            )
        })
        .collect();
    keys.sort();
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    h.update(b"hotaru v1 publish\0");
    h.update(p.verification_payload.as_bytes());
    for k in &keys {
        h.update(b"\0");
        h.update(k.as_bytes());
    }
    format!("v1-publish:{}", hex::encode(h.finish()))
}

/// Whether the request says its body is JSON (`application/json`, or a `+json` type).
fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

pub(crate) fn parse_publish(body: &[u8], authority: &str) -> Result<PublishRequest, ApiError> {
    if body.len() > UPLOAD_BODY_LIMIT {
        return Err(ApiError::new(
            413,
            "BODY_TOO_LARGE",
            "the request body is too large",
        ));
    }
    let p: PublishRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("INVALID_JSON", format!("invalid body: {e}")))?;
    if p.health_authority_id != authority {
        return Err(ApiError::new(
            401,
            "UNKNOWN_HEALTH_AUTHORITY_ID",
            "healthAuthorityID names no health authority of this server",
        ));
    }
    if let Some(h) = &p.hmac_key
        && base64::engine::general_purpose::STANDARD
            .decode(h.as_bytes())
            .is_err()
    {
        return Err(ApiError::bad_request(
            "INVALID_HMAC_KEY",
            "hmacKey must be base64",
        ));
    }
    let _ = p.symptom_onset_interval;
    Ok(p)
}

/// Google's v1 publish (`POST /v1/publish`). The verification payload is the processing
/// number; a partial failure is answered 200 with the valid keys saved and a warning per
/// dropped key; with `revisionToken` the device adds keys to its earlier upload.
pub(crate) async fn publish_v1(
    g: web::Data<Gateway>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let source = g.limits.source(&req, g.clock.now());
    if let Err(e) = g.limits.admit(source) {
        return publish_error(e, answer_size(body.len()));
    }
    // A device route: JSON only. A `text/plain` POST is a browser's "simple request",
    // which any web page could make its visitors send.
    if !is_json(&req) {
        let e = ApiError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
        );
        return publish_error(e, answer_size(body.len()));
    }
    let p = match parse_publish(&body, &g.health_authority) {
        Ok(p) => p,
        Err(e) => return publish_error(e, answer_size(body.len())),
    };
    let keys: Vec<SubmittedKey> = p
        .temporary_exposure_keys
        .iter()
        .map(PublishKey::submitted)
        .collect();
    let size = answer_size(body.len());
    if is_chaff(&req) {
        // Refused (C) when a real upload would be; else a success's answer, of its size.
        if let Err(e) = g.commands.attempt_verdict(source).await {
            g.chaff_refused.wait(started).await;
            return publish_error(command_error(&g, e), size);
        }
        g.chaff.wait(started).await;
        let answer = PublishResponse {
            revision_token: chaff_token(&*g.random),
            inserted_exposures: keys.len().min(30) as u16,
            ..Default::default()
        };
        return padded_json(StatusCode::OK, size, answer, |a, p| a.padding = p);
    }
    let answer = g
        .commands
        .publish(
            Redemption {
                idempotency_key: Some(idempotency_of(&p)),
                number: p.verification_payload,
                keys,
                source,
            },
            p.revision_token.filter(|t| !t.is_empty()),
        )
        .await;
    record_real(&g, started, &answer);
    let answer = match answer {
        Err(e) => {
            let e = command_error(&g, e);
            g.metrics.redemption(e.code);
            return publish_error(e, size);
        }
        Ok(a) => a,
    };
    g.metrics.redemption("ok");
    let dropped = &answer.answer.dropped;
    let (code, error) = if dropped.is_empty() {
        (String::new(), String::new())
    } else {
        (
            "PARTIAL_FAILURE".to_owned(),
            format!("{} of the keys were not saved", dropped.len()),
        )
    };
    let answer = PublishResponse {
        revision_token: answer.revision_token,
        inserted_exposures: answer.answer.accepted,
        message: error.clone(),
        error,
        code,
        padding: String::new(),
        warnings: dropped
            .iter()
            .map(|d| format!("key {}: {:?}", d.index, d.reason))
            .collect(),
    };
    padded_json(StatusCode::OK, size, answer, |a, p| a.padding = p)
}
