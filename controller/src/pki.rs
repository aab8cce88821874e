//! The controller's keys and certificates, kept in its state directory.
//!
//! - `ca.key.pem`, `ca.cert.pem`: the fleet CA (ECDSA P-256). It signs the controller's server
//!   certificate and each gateway's client certificate at enrollment. Gateways are provisioned
//!   with `ca.cert.pem` to authenticate the controller.
//! - `server.key.pem`, `server.cert.pem`: the agent listener's certificate.
//! - `command.key`: the ed25519 key that signs policy and commands; gateways verify them with
//!   its public half (provisioned into the monitor) through AGENT_VERIFY / POLICY_SET.
//! - `operator.token`: bearer token of the operator API.
//!
//! Private files are created 0600 and never overwritten.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use ed25519_dalek::SigningKey;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, pem::PemObject,
};

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A PEM file is malformed.
    #[error("{0}: malformed PEM")]
    Pem(PathBuf),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// A state file holds something else than expected.
    #[error("{0}: {1}")]
    Invalid(PathBuf, &'static str),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.into(),
        source,
    }
}

/// Write `contents` to a new file with mode `mode`; an existing file is an error.
fn create_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Everything the controller signs with.
pub struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_cert: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
    command_key: SigningKey,
    operator_token: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("system random source");
    b
}

impl Pki {
    /// Load the state directory, creating what is missing. `server_names` are the DNS names
    /// and IP addresses gateways use to reach the controller (put in the server certificate
    /// when it is first made).
    pub fn load_or_create(dir: &Path, server_names: &[String]) -> Result<Self, PkiError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let p = |n: &str| dir.join(n);

        let ca_key_path = p("ca.key.pem");
        if !ca_key_path.exists() {
            let key = KeyPair::generate()?;
            create_private(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            let cert = ca_params().self_signed(&key)?;
            create_private(&p("ca.cert.pem"), cert.pem().as_bytes(), 0o644)?;
        }
        let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)?;
        let ca_cert = load_cert(&p("ca.cert.pem"))?;
        let ca_params = ca_params();

        let server_key_path = p("server.key.pem");
        if !server_key_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(server_names.to_vec())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "gatewarden-controller");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let issuer = Issuer::from_params(&ca_params, &ca_key);
            let cert = params.signed_by(&key, &issuer)?;
            create_private(&server_key_path, key.serialize_pem().as_bytes(), 0o600)?;
            create_private(&p("server.cert.pem"), cert.pem().as_bytes(), 0o644)?;
        }
        let server_cert = load_cert(&p("server.cert.pem"))?;
        let server_key = PrivateKeyDer::from_pem_slice(read(&server_key_path)?.as_bytes())
            .map_err(|_| PkiError::Pem(server_key_path.clone()))?;

        let command_path = p("command.key");
        if !command_path.exists() {
            create_private(&command_path, hex::encode(random32()).as_bytes(), 0o600)?;
        }
        let command_key = SigningKey::from_bytes(
            &gw_proto::hex32(&read(&command_path)?)
                .ok_or(PkiError::Invalid(command_path.clone(), "not 64 hex digits"))?,
        );

        let token_path = p("operator.token");
        if !token_path.exists() {
            create_private(&token_path, hex::encode(random32()).as_bytes(), 0o600)?;
        }
        let operator_token = read(&token_path)?.trim().to_owned();
        if operator_token.len() < 32 {
            return Err(PkiError::Invalid(
                token_path,
                "token shorter than 32 characters",
            ));
        }

        Ok(Self {
            ca_key,
            ca_params,
            ca_cert,
            server_cert,
            server_key,
            command_key,
            operator_token,
            dir: dir.into(),
        })
    }

    /// Issue a client certificate for `gateway_id` over the key in `csr` (PKCS#10 DER). The
    /// CSR's own subject and extensions are ignored: the controller decides what it certifies.
    pub fn issue_client_cert(&self, gateway_id: &str, csr: &[u8]) -> Result<Vec<u8>, PkiError> {
        let mut req = CertificateSigningRequestParams::from_der(
            &CertificateSigningRequestDer::from(csr.to_vec()),
        )?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, gateway_id);
        params.subject_alt_names = vec![SanType::URI(
            format!("urn:gatewarden:gateway:{gateway_id}").try_into()?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut serial = random32();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial[..16]));
        req.params = params;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        Ok(req.signed_by(&issuer)?.der().to_vec())
    }

    /// TLS configuration of the agent listener: client certificates are verified against the
    /// fleet CA when offered, and optional so that a new gateway can enroll.
    pub fn agent_tls(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| PkiError::Verifier(e.to_string()))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_cert.clone(), self.ca_cert.clone()],
                self.server_key.clone_key(),
            )?;
        Ok(Arc::new(config))
    }

    /// TLS configuration of the operator API (server authentication only; operators present
    /// the bearer token).
    pub fn api_tls(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert.clone(), self.ca_cert.clone()],
                self.server_key.clone_key(),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The fleet CA certificate (DER).
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// Path of the CA certificate PEM (what gateways are provisioned with).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.cert.pem")
    }

    /// The policy/command signing key.
    pub fn command_key(&self) -> &SigningKey {
        &self.command_key
    }

    /// The operator API bearer token.
    pub fn operator_token(&self) -> &str {
        &self.operator_token
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Gatewarden fleet CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io(path))
}

fn load_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(read(path)?.as_bytes()).map_err(|_| PkiError::Pem(path.into()))
}

/// SHA-256 of a certificate: how the controller recognises a gateway's client certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    vtpm::sha256(cert)
}
