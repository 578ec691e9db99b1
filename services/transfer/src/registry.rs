//! Talking to registries: a thin wrapper over the `oci-client` crate that adds
//! molde's host configuration, plain HTTP for loopback registries, size caps,
//! retries with backoff and resumable blob downloads.
//!
//! Host configuration follows containerd's `hosts.toml`, one directory per
//! registry under `/etc/molde/certs.d/<host>/hosts.toml`:
//!
//! ```toml
//! plain_http = false                        # talk HTTP instead of HTTPS
//! skip_verify = false                       # accept any TLS certificate
//! ca = ["/etc/molde/certs.d/registry.example.com/ca.crt"]
//! ```
//!
//! As Docker does, registries on `localhost` and `127.0.0.0/8` are reached over
//! plain HTTP without any configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use oci_client::client::{BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tonic::Code;

use molde_common::errdefs::{Error, Result};

use super::media::{ACCEPTED, MAX_METADATA};

/// Label recording the repository a blob was pulled from, per registry.
pub use molde_common::labels::DISTRIBUTION_SOURCE as SOURCE_LABEL;

/// Attempts per request before a pull gives up on a registry.
pub const ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    pub plain_http: bool,
    pub skip_verify: bool,
    pub ca: Vec<PathBuf>,
}

/// Reads per-registry settings from a certs.d-style directory.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub dir: PathBuf,
}

impl Hosts {
    pub fn config_for(&self, registry: &str) -> Result<HostConfig> {
        let p = self.dir.join(registry).join("hosts.toml");
        match std::fs::read_to_string(&p) {
            Ok(text) => parse_hosts(&text, &p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HostConfig::default()),
            Err(e) => Err(Error::Io {
                context: format!("reading {}", p.display()),
                source: e,
            }),
        }
    }
}

fn parse_hosts(text: &str, path: &Path) -> Result<HostConfig> {
    let v: toml::Value =
        toml::from_str(text).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    v.try_into()
        .map_err(|e: toml::de::Error| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Whether a registry host is on the loopback network.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            registry
        }
    });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.starts_with("127.") || host == "::1"
}

/// A client for one registry, with one set of credentials.
pub struct Registry {
    config: ConfigParts,
    auth: RegistryAuth,
    /// The client and the credentials it sends, settled on first use.
    state: tokio::sync::OnceCell<(Client, RegistryAuth)>,
    pub registry: String,
}

/// What a client is built from (oci-client's config is not Clone).
struct ConfigParts {
    plain: bool,
    skip_verify: bool,
    ca: Vec<Vec<u8>>,
}

impl ConfigParts {
    fn client(&self, registry: &str) -> Client {
        Client::new(ClientConfig {
            protocol: if self.plain {
                ClientProtocol::HttpsExcept(vec![registry.to_string()])
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: self.skip_verify,
            extra_root_certificates: self
                .ca
                .iter()
                .map(|data| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: data.clone(),
                })
                .collect(),
            read_timeout: Some(Duration::from_secs(30)),
            connect_timeout: Some(Duration::from_secs(10)),
            user_agent: concat!("molde/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }
}

impl Registry {
    pub fn new(registry: &str, auth: RegistryAuth, hosts: &Hosts) -> Result<Registry> {
        let hc = hosts.config_for(registry)?;
        let mut ca = Vec::new();
        for p in &hc.ca {
            ca.push(std::fs::read(p).map_err(Error::io(format!("reading CA file {}", p.display())))?);
        }
        Ok(Registry {
            config: ConfigParts {
                plain: hc.plain_http || is_loopback(registry),
                skip_verify: hc.skip_verify,
                ca,
            },
            auth,
            state: tokio::sync::OnceCell::new(),
            registry: registry.to_string(),
        })
    }

    /// The client and credentials to use. Anonymous access to a registry that
    /// sends no auth challenge is settled once: oci-client would otherwise ask
    /// `/v2/` again before every request.
    async fn session(&self, reference: &Reference) -> &(Client, RegistryAuth) {
        self.state
            .get_or_init(|| async {
                let client = self.config.client(&self.registry);
                if matches!(self.auth, RegistryAuth::Anonymous)
                    && let Ok(None) = client
                        .auth(
                            reference,
                            &RegistryAuth::Anonymous,
                            oci_client::RegistryOperation::Pull,
                        )
                        .await
                {
                    // No challenge: nothing to authenticate. An empty bearer token
                    // is cached by the client and ignored by the registry.
                    return (
                        self.config.client(&self.registry),
                        RegistryAuth::Bearer(String::new()),
                    );
                }
                (client, self.auth.clone())
            })
            .await
    }

    /// The raw manifest or index `reference` points at, with its digest.
    pub async fn manifest(&self, reference: &Reference) -> Result<(Bytes, String)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, auth) = self.session(reference).await;
            match client.pull_manifest_raw(reference, auth, ACCEPTED).await {
                Ok((body, digest)) => {
                    if body.len() > MAX_METADATA {
                        return Err(Error::InvalidArgument(format!(
                            "manifest of {reference} is {} bytes, over the {MAX_METADATA}-byte limit",
                            body.len()
                        )));
                    }
                    return Ok((body, digest));
                }
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    tracing::warn!(%reference, attempt, error = %e, "manifest request failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) => return Err(remote(&format!("resolving {reference}"), e)),
            }
        }
    }

    /// A stream of the blob's bytes from `offset` on; `true` if the registry
    /// honoured the range (otherwise the stream starts at 0).
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<(BoxStream<'static, std::io::Result<Bytes>>, bool)> {
        let what = format!("fetching {digest} of {reference}");
        let (client, auth) = self.session(reference).await;
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        // Always a range request: a 206 answer is streamed without oci-client
        // hashing it too; the ingest verifies the digest at commit either way.
        let r = client
            .pull_blob_stream_partial(reference, &digest, offset, None)
            .await;
        match r.map_err(|e| remote(&what, e))? {
            BlobResponse::Full(s) => Ok((s.stream, false)),
            BlobResponse::Partial(s) => Ok((s.stream, true)),
        }
    }

    /// The client, with credentials stored for `reference`'s registry.
    pub async fn client(&self, reference: &Reference) -> &Client {
        let (client, auth) = self.session(reference).await;
        client
            .store_auth_if_needed(reference.resolve_registry(), auth)
            .await;
        client
    }
}

pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64 << attempt.min(6))
}

/// Errors worth another attempt: the network, and the registry's 5xx and 429.
pub fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_timeout() || r.is_connect() || r.is_request() || r.is_body()
        }
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// An oci-client error as a Error with the gRPC code a client can act on.
pub fn remote(what: &str, e: OciDistributionError) -> Error {
    let code = match &e {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            Code::Unauthenticated
        }
        OciDistributionError::ImageManifestNotFoundError(_) => Code::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope.errors.iter().any(|e| {
                let c = format!("{:?}", e.code);
                c.contains("Unknown") || c.contains("NotFound")
            }) {
                Code::NotFound
            } else if envelope.errors.iter().any(|e| {
                format!("{:?}", e.code).contains("Denied") || format!("{:?}", e.code).contains("Unauthorized")
            }) {
                Code::PermissionDenied
            } else {
                Code::FailedPrecondition
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => Code::NotFound,
        OciDistributionError::ServerError { code: 401, .. } => Code::Unauthenticated,
        OciDistributionError::ServerError { code: 403, .. } => Code::PermissionDenied,
        OciDistributionError::ServerError { .. }
        | OciDistributionError::RequestError(_)
        | OciDistributionError::IoError(_) => Code::Unavailable,
        OciDistributionError::DigestError(_) => Code::DataLoss,
        _ => Code::FailedPrecondition,
    };
    Error::Remote {
        code,
        message: format!("{what}: {}", describe(&e)),
    }
}

fn describe(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RequestError(r) => {
            let mut s = r.to_string();
            let mut src = std::error::Error::source(r);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        for h in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "registry.local:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn hosts_toml_parses() {
        let c = parse_hosts(
            "plain_http = true\nskip_verify = true\nca = [\"/x.pem\"]\n",
            Path::new("h"),
        )
        .unwrap();
        assert!(c.plain_http && c.skip_verify);
        assert_eq!(c.ca, [PathBuf::from("/x.pem")]);
        assert!(
            parse_hosts("mirrors = []", Path::new("h")).is_err(),
            "unknown keys are refused"
        );
        assert!(parse_hosts("plain_http = 3", Path::new("h")).is_err());
    }
}
