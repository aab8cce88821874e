//! A small HTTPS client of the operator API, used by the CLI, `cargo xtask demo` and tests.

use std::{net::SocketAddr, path::Path, sync::Arc};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the controller.
    #[error("cannot reach the controller at {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// TLS or HTTP failed.
    #[error("talking to the controller: {0}")]
    Http(String),
    /// The CA file is unusable.
    #[error("CA certificate {0}: {1}")]
    Ca(String, String),
    /// The API answered with an error.
    #[error("controller answered {0}: {1}")]
    Status(StatusCode, String),
}

/// Operator API client.
#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    name: ServerName<'static>,
    tls: TlsConnector,
    token: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A TLS client configuration trusting only the fleet CA in `ca_pem`.
pub fn tls_trusting(ca_pem: &Path) -> Result<ClientConfig, ClientError> {
    let shown = ca_pem.display().to_string();
    let pem = std::fs::read(ca_pem).map_err(|e| ClientError::Ca(shown.clone(), e.to_string()))?;
    let cert = CertificateDer::from_pem_slice(&pem)
        .map_err(|e| ClientError::Ca(shown.clone(), e.to_string()))?;
    let mut roots = RootCertStore::empty();
    roots
        .add(cert)
        .map_err(|e| ClientError::Ca(shown, e.to_string()))?;
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Http(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl ApiClient {
    /// A client of the API at `addr`, whose certificate is issued by the CA in `ca_pem` for
    /// `server_name`.
    pub fn new(
        addr: SocketAddr,
        server_name: &str,
        ca_pem: &Path,
        token: &str,
    ) -> Result<Self, ClientError> {
        let config = tls_trusting(ca_pem)?;
        Ok(Self {
            addr,
            name: ServerName::try_from(server_name.to_owned())
                .map_err(|e| ClientError::Http(e.to_string()))?,
            tls: TlsConnector::from(Arc::new(config)),
            token: token.into(),
        })
    }

    /// One request; returns the status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ClientError::Connect(self.addr, e))?;
        let tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Http(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A request whose non-2xx answer is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            Err(ClientError::Status(status, msg))
        }
    }

    /// GET and parse JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        let b = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&b)
            .map_err(|e| ClientError::Http(format!("bad JSON from {path}: {e}")))
    }
}
