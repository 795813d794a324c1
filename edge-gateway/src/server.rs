//! The HTTP server: the gateway's routes on a listener the caller bound, over plain HTTP or
//! TLS (rustls with ring), stopping gracefully on SIGINT or SIGTERM, or through the
//! returned server's handle.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};

use crate::Gateway;

/// How [`serve`] runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// HTTP worker threads (actix's default, one per core, when `None`).
    pub workers: Option<usize>,
    /// Serve HTTPS with this configuration (see [`tls_config`]).
    pub tls: Option<rustls::ServerConfig>,
    /// On a stop, how long in-flight requests may take to finish.
    pub shutdown_timeout_s: u64,
    /// Count requests by route and status for `/metrics` ([`crate::observe`]).
    pub observe: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            workers: None,
            tls: None,
            shutdown_timeout_s: 30,
            observe: true,
        }
    }
}

/// Serves the gateway on `listener` until the returned server is stopped (by a signal or
/// its handle): await it, or spawn it and keep [`actix_web::dev::Server::handle`].
pub fn serve(
    listener: TcpListener,
    gateway: Gateway,
    options: ServeOptions,
) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(gateway);
    let observe = options.observe;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(crate::routes::json_errors())
            .wrap(actix_web::middleware::Condition::new(
                observe,
                actix_web::middleware::from_fn(crate::observe),
            ))
            .configure(crate::configure)
    })
    .shutdown_timeout(options.shutdown_timeout_s);
    if let Some(w) = options.workers {
        server = server.workers(w);
    }
    let server = match options.tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {0}: {1}")]
    Certificate(String, String),
    #[error("{0} is not a PEM certificate chain: {1}")]
    NotPem(String, String),
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read a PEM private key from {0}: {1}")]
    Key(String, String),
    #[error("TLS protocol versions: {0}")]
    Protocol(String),
    #[error("the certificate and the private key do not go together: {0}")]
    Mismatch(String),
}

/// The TLS configuration from a PEM certificate chain and private key (rustls, ring).
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let shown = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Certificate(shown(cert), e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem(shown(cert), e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(shown(cert)));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(shown(key), e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Protocol(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Mismatch(e.to_string()))
}

/// Serves the gateway over plain HTTP on a free loopback port with two workers (for the
/// simulator, the benchmarks and tests), returning the address with the server.
pub fn serve_loopback(
    gateway: Gateway,
) -> std::io::Result<(std::net::SocketAddr, actix_web::dev::Server)> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let addr = listener.local_addr()?;
    let options = ServeOptions {
        workers: Some(2),
        ..Default::default()
    };
    Ok((addr, serve(listener, gateway, options)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each way a TLS configuration can be wrong is refused with its own reason.
    #[test]
    fn a_bad_tls_configuration_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nnot base64!\n").unwrap();
        assert!(matches!(
            tls_config(&missing, &missing),
            Err(TlsError::Certificate(..))
        ));
        assert!(matches!(
            tls_config(&empty, &empty),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(tls_config(&junk, &junk).is_err());
    }
}
