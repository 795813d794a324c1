//! What every device downloads: the exposure configuration, the export index and the
//! signed export files, cacheable with strong ETags.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::{ApiError, FILE_CACHE_BYTES, Gateway};

pub(crate) async fn exposure_configuration(g: web::Data<Gateway>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(&g.risk)
}

/// A cacheable answer with a strong ETag (the body's SHA-256, given or computed); 304 when
/// the client has it; no body for HEAD.
fn cacheable(
    req: &HttpRequest,
    body: impl Into<actix_web::web::Bytes> + AsRef<[u8]>,
    sha256: Option<[u8; 32]>,
    content_type: &str,
    cache: &str,
) -> HttpResponse {
    let sha = sha256.unwrap_or_else(|| {
        ring::digest::digest(&ring::digest::SHA256, body.as_ref())
            .as_ref()
            .try_into()
            .expect("32 bytes")
    });
    let etag = format!("\"{}\"", hex::encode(&sha[..16]));
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut r = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    r.insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache));
    if matches {
        return r.finish();
    }
    // For HEAD, actix-web sends these headers (Content-Length included) without the body.
    r.content_type(content_type).body(body.into())
}

pub(crate) async fn index_txt(
    g: web::Data<Gateway>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let lines = g.distribution.index().await.map_err(ApiError::from_log)?;
    let mut body = lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    Ok(cacheable(
        &req,
        body.into_bytes(),
        None,
        "text/plain; charset=utf-8",
        "public, max-age=300",
    ))
}

pub(crate) async fn export_file(
    g: web::Data<Gateway>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (region, file) = path.into_inner();
    let name = format!("exports/{region}/{file}");
    let cached = g.files.lock().expect("not poisoned").get(&name).cloned();
    let (zip, sha) = match cached {
        Some(hit) => hit,
        None => {
            let (zip, sha) = g
                .distribution
                .file_with_digest(&name)
                .await
                .map_err(ApiError::from_log)?
                .ok_or_else(ApiError::not_found)?;
            let zip = actix_web::web::Bytes::from(zip);
            let mut files = g.files.lock().expect("not poisoned");
            // Published files never change; keep the newest ones, up to a budget.
            let held: usize = files.values().map(|(z, _)| z.len()).sum();
            if held + zip.len() > FILE_CACHE_BYTES {
                files.clear();
            }
            files.insert(name, (zip.clone(), sha));
            (zip, sha)
        }
    };
    // A published file never changes: cache it for a year.
    Ok(cacheable(
        &req,
        zip,
        Some(sha),
        "application/zip",
        "public, max-age=31536000, immutable",
    ))
}
