//! Listeners: plain HTTP (loopback only, enforced by the caller) and TLS via rustls with TLS 1.3
//! preferred and TLS 1.2 the minimum.

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// PEM files for the server certificate chain and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Builds the rustls server configuration: TLS 1.3 and 1.2 only, HTTP/1.1 by ALPN.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cannot read certificate `{}`: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate PEM `{}`: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in `{}`", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read key `{}`: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The server's TLS configuration, which `SIGHUP` re-reads from its files (a renewed
/// certificate is served to new connections without a restart; open ones keep theirs).
pub struct Tls {
    files: TlsFiles,
    current: std::sync::RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Reads the certificate and key.
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let cfg = tls_config(&files)?;
        Ok(Tls { files, current: std::sync::RwLock::new(cfg) })
    }

    /// Re-reads the files; on any error the configuration in use is kept and the error returned.
    pub fn reload(&self) -> Result<(), String> {
        let cfg = tls_config(&self.files)?;
        let mut current = self.current.write().map_err(|_| "tls configuration lock poisoned".to_string())?;
        *current = cfg;
        Ok(())
    }

    fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().map(|c| TlsAcceptor::from(c.clone()))
    }
}

/// How the server stops: on `shutdown`, it stops accepting, lets requests in progress finish and
/// closes idle connections; after `drain` it closes whatever is still open and returns.
pub struct Stop<F> {
    /// Resolves when the server should stop (SIGTERM, Ctrl-C).
    pub shutdown: F,
    /// The bound on draining.
    pub drain: std::time::Duration,
}

/// Serves `app` on `listener` until `stop.shutdown` resolves and the drain ends.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Tls>>,
    stop: Stop<impl std::future::Future<Output = ()> + Send + 'static>,
) -> std::io::Result<()> {
    let Stop { shutdown, drain } = stop;
    let Some(tls) = tls else {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .into_future();
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => return r,
            () = shutdown => {}
        }
        let _ = tx.send(());
        tracing::info!(drain_secs = drain.as_secs(), "shutting down: draining connections");
        return match tokio::time::timeout(drain, server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(drain_secs = drain.as_secs(), "drain bound reached; closing the connections still open");
                Ok(())
            }
        };
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            () = &mut shutdown => break,
        };
        let Some(acceptor) = tls.acceptor() else { continue };
        // The peer address, for the audit trail, as axum's ConnectInfo would carry it.
        let app = app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = TowerToHyperService::new(app);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder = builder.http1_only();
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
    drop(listener);
    tracing::info!(drain_secs = drain.as_secs(), connections = graceful.count(), "shutting down: draining connections");
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(drain_secs = drain.as_secs(), "drain bound reached; closing the connections still open");
    }
    Ok(())
}
