//! The edge gateway: the only crate that knows HTTP and JSON. It turns requests into
//! commands for the server's actors and answers with stable JSON (`{code, message}` for
//! every error, docs/api-errors.md).
//!
//! Unknown JSON fields: ignored on the device APIs (apps send more than Hotaru uses, e.g.
//! COCOA's `regions` and `platform`), refused on the health-centre and operator APIs (a
//! typo there must not pass silently).
//!
//! The map: [`state`] is what handlers share, [`routes`] mounts them, [`server`] runs them
//! on a listener (HTTP or TLS); `auth` checks API keys, `chaff` makes decoy uploads look
//! real, `wire` holds the JSON bodies, and `api` has one module per API (centre, device v3,
//! publish v1, exports, operator, support, health).

mod api;
mod auth;
mod chaff;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod state;
mod wire;

pub use chaff::ChaffTimer;
pub use error::ApiError;
pub use routes::{ROUTES, configure, observe};
pub use server::{ServeOptions, TlsError, serve, serve_loopback, tls_config};
pub use state::{DEFAULT_HEALTH_AUTHORITY, FILE_CACHE_BYTES, FileCache, Gateway};

/// The largest upload body accepted (COCOA's and Google's servers use the same order).
pub const UPLOAD_BODY_LIMIT: usize = 64 * 1024;
/// The OpenAPI document, also at docs/openapi.json.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

#[cfg(test)]
mod fuzz;
