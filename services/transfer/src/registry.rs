//! Talking to registries: a thin wrapper over the `oci-client` crate that adds
//! molde's host configuration (mirrors included), plain HTTP for loopback
//! registries, size caps, retries with backoff and resumable blob downloads.
//!
//! Host configuration follows containerd's `hosts.toml`, one directory per
//! registry under `/etc/molde/certs.d/<host>/hosts.toml` (`_default/` for
//! registries without one):
//!
//! ```toml
//! server = "https://registry.example.com"   # the upstream (default: the registry itself)
//! skip_verify = false                       # accept any TLS certificate (of the server)
//! ca = ["/etc/molde/certs.d/registry.example.com/ca.crt"]
//! plain_http = false                        # molde's own: talk HTTP to the server
//!
//! [host."http://127.0.0.1:5000"]            # a mirror, tried before the server
//!   capabilities = ["pull", "resolve"]      # what it is asked for (push too, if listed)
//!   skip_verify = true
//!   ca = "/etc/molde/mirror-ca.pem"
//!   override_path = false                   # true: the URL's path is the API root (.../v2/prefix)
//! ```
//!
//! Mirrors are tried in the order the file lists them, then the server; a
//! mirror that fails or lacks what is asked for passes to the next. As Docker
//! does, registries on `localhost` and `127.0.0.0/8` are reached over plain
//! HTTP without any configuration.

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

/// One string or a list of them (`ca = "x"` or `ca = ["x", "y"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HostFile {
    server: Option<String>,
    plain_http: bool,
    skip_verify: bool,
    ca: OneOrMany,
    host: toml::Table,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    skip_verify: bool,
    ca: OneOrMany,
    override_path: bool,
    /// Containerd's other keys, accepted and not used by molde.
    client: Option<toml::Value>,
    header: Option<toml::Value>,
    dial_timeout: Option<toml::Value>,
}

/// Where requests for a registry go: a mirror or the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as a reference's registry.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    pub ca: Vec<PathBuf>,
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
    /// A path the repository goes under (`override_path` mirrors).
    pub prefix: String,
}

/// A registry's endpoints, mirrors first, the server last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    pub endpoints: Vec<Endpoint>,
}

impl HostConfig {
    /// The registry itself, over HTTPS (HTTP for loopback ones).
    fn upstream(registry: &str) -> HostConfig {
        HostConfig {
            endpoints: vec![Endpoint {
                host: registry.to_string(),
                plain_http: is_loopback(registry),
                skip_verify: false,
                ca: Vec::new(),
                pull: true,
                resolve: true,
                push: true,
                prefix: String::new(),
            }],
        }
    }
}

/// Reads per-registry settings from a certs.d-style directory.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub dir: PathBuf,
}

impl Hosts {
    pub fn config_for(&self, registry: &str) -> Result<HostConfig> {
        for dir in [registry, "_default"] {
            let p = self.dir.join(dir).join("hosts.toml");
            match std::fs::read_to_string(&p) {
                Ok(text) => return parse_hosts(&text, &p, registry),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("reading {}", p.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(HostConfig::upstream(registry))
    }
}

/// `scheme://host[:port][/path]` → (host, plain, path).
fn split_url(url: &str, path: &Path) -> Result<(String, bool, String)> {
    let bad = || Error::InvalidArgument(format!("{}: {url:?} is not an http(s) URL", path.display()));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let plain = match scheme {
        "http" => true,
        "https" => false,
        _ => return Err(bad()),
    };
    let (host, p) = match rest.split_once('/') {
        Some((h, p)) => (h.to_string(), p.trim_end_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, plain, p))
}

fn parse_hosts(text: &str, path: &Path, registry: &str) -> Result<HostConfig> {
    let bad = |e: toml::de::Error| Error::InvalidArgument(format!("{}: {e}", path.display()));
    let f: HostFile = toml::from_str(text).map_err(bad)?;
    let mut endpoints = Vec::new();
    // In the order the file lists them (a table's keys come sorted).
    let mut hosts: Vec<(&String, &toml::Value)> = f.host.iter().collect();
    hosts.sort_by_key(|(url, _)| text.find(&format!("\"{url}\"")).unwrap_or(usize::MAX));
    for (url, v) in hosts {
        let e: HostEntry = v.clone().try_into().map_err(bad)?;
        let (host, plain, p) = split_url(url, path)?;
        let prefix = if e.override_path {
            // The URL's path is the API root: /v2[/prefix].
            p.strip_prefix("v2")
                .unwrap_or(&p)
                .trim_start_matches('/')
                .to_string()
        } else if p.is_empty() || p == "v2" {
            String::new()
        } else {
            return Err(Error::InvalidArgument(format!(
                "{}: mirror {url}: a path needs override_path = true (its path is then the API root)",
                path.display()
            )));
        };
        let caps = e
            .capabilities
            .unwrap_or_else(|| vec!["pull".into(), "resolve".into(), "push".into()]);
        for c in &caps {
            if !["pull", "resolve", "push"].contains(&c.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "{}: mirror {url}: unknown capability {c:?} (pull, resolve, push)",
                    path.display()
                )));
            }
        }
        endpoints.push(Endpoint {
            host,
            plain_http: plain,
            skip_verify: e.skip_verify,
            ca: e.ca.into_vec(),
            pull: caps.iter().any(|c| c == "pull"),
            resolve: caps.iter().any(|c| c == "resolve"),
            push: caps.iter().any(|c| c == "push"),
            prefix,
        });
    }
    let mut server = HostConfig::upstream(registry).endpoints.remove(0);
    if let Some(url) = &f.server {
        let (host, plain, _) = split_url(url, path)?;
        server.host = host;
        server.plain_http = plain;
    }
    server.plain_http |= f.plain_http || is_loopback(&server.host);
    server.skip_verify = f.skip_verify;
    server.ca = f.ca.into_vec();
    endpoints.push(server);
    Ok(HostConfig { endpoints })
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

/// A client for one registry, with one set of credentials, reaching it
/// through its endpoints.
pub struct Registry {
    endpoints: Vec<EndpointClient>,
    auth: RegistryAuth,
    pub registry: String,
}

struct EndpointClient {
    endpoint: Endpoint,
    ca: Vec<Vec<u8>>,
    /// The client and the credentials it sends, settled on first use.
    state: tokio::sync::OnceCell<(Client, RegistryAuth)>,
}

impl EndpointClient {
    /// A client for the endpoint. Building one can fail (a host without CA
    /// certificates): an error naming the endpoint, where oci-client's
    /// `Client::new` would panic.
    fn client(&self) -> Result<Client> {
        let e = &self.endpoint;
        let config = ClientConfig {
            protocol: if e.plain_http {
                ClientProtocol::HttpsExcept(vec![e.host.clone()])
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: e.skip_verify,
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
        };
        Client::try_from(config).map_err(|err| {
            // reqwest's error says "builder error"; the why is in its sources.
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            Error::FailedPrecondition(format!(
                "setting up a client for registry {}: {why} (are the CA certificates installed? Debian: ca-certificates)",
                e.host
            ))
        })
    }

    /// `reference` as this endpoint serves it.
    fn rewrite(&self, reference: &Reference) -> Reference {
        let e = &self.endpoint;
        let repo = if e.prefix.is_empty() {
            reference.repository().to_string()
        } else {
            format!("{}/{}", e.prefix, reference.repository())
        };
        match (reference.digest(), reference.tag()) {
            (Some(d), _) => Reference::with_digest(e.host.clone(), repo, d.to_string()),
            (None, Some(t)) => Reference::with_tag(e.host.clone(), repo, t.to_string()),
            (None, None) => Reference::with_tag(e.host.clone(), repo, "latest".into()),
        }
    }
}

impl Registry {
    pub fn new(registry: &str, auth: RegistryAuth, hosts: &Hosts) -> Result<Registry> {
        let hc = hosts.config_for(registry)?;
        let mut endpoints = Vec::new();
        for e in hc.endpoints {
            let mut ca = Vec::new();
            for p in &e.ca {
                ca.push(std::fs::read(p).map_err(Error::io(format!("reading CA file {}", p.display())))?);
            }
            endpoints.push(EndpointClient {
                endpoint: e,
                ca,
                state: tokio::sync::OnceCell::new(),
            });
        }
        Ok(Registry {
            endpoints,
            auth,
            registry: registry.to_string(),
        })
    }

    /// The client and credentials to use at an endpoint. Anonymous access to
    /// a registry that sends no auth challenge is settled once: oci-client
    /// would otherwise ask `/v2/` again before every request.
    async fn session<'a>(
        &self,
        ep: &'a EndpointClient,
        reference: &Reference,
    ) -> Result<&'a (Client, RegistryAuth)> {
        ep.state
            .get_or_try_init(|| async {
                let client = ep.client()?;
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
                    return Ok((ep.client()?, RegistryAuth::Bearer(String::new())));
                }
                Ok((client, self.auth.clone()))
            })
            .await
    }

    /// The raw manifest or index `reference` points at, with its digest:
    /// from the first endpoint that can resolve it (a tag needs `resolve`).
    pub async fn manifest(&self, reference: &Reference) -> Result<(Bytes, String)> {
        let by_digest = reference.digest().is_some();
        let mut last = None;
        for ep in self
            .endpoints
            .iter()
            .filter(|e| e.endpoint.resolve || (by_digest && e.endpoint.pull))
        {
            let at = ep.rewrite(reference);
            match self.manifest_at(ep, &at).await {
                Ok(m) => return Ok(m),
                Err(e) => {
                    if !std::ptr::eq(ep, self.endpoints.last().expect("the server")) {
                        tracing::info!(%reference, mirror = %ep.endpoint.host, error = %e, "mirror failed; trying the next");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::FailedPrecondition(format!("no endpoint of {} resolves {reference}", self.registry))
        }))
    }

    async fn manifest_at(&self, ep: &EndpointClient, reference: &Reference) -> Result<(Bytes, String)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (client, auth) = self.session(ep, reference).await?;
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
    /// honoured the range (otherwise the stream starts at 0). From the first
    /// endpoint with `pull` that answers.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        offset: u64,
    ) -> Result<(BoxStream<'static, std::io::Result<Bytes>>, bool)> {
        let mut last = None;
        for ep in self.endpoints.iter().filter(|e| e.endpoint.pull) {
            let at = ep.rewrite(reference);
            let what = format!("fetching {digest} of {reference}");
            let (client, auth) = match self.session(ep, &at).await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            client.store_auth_if_needed(at.resolve_registry(), auth).await;
            // Always a range request: a 206 answer is streamed without oci-client
            // hashing it too; the ingest verifies the digest at commit either way.
            match client.pull_blob_stream_partial(&at, &digest, offset, None).await {
                Ok(BlobResponse::Full(s)) => return Ok((s.stream, false)),
                Ok(BlobResponse::Partial(s)) => return Ok((s.stream, true)),
                Err(e) => last = Some(remote(&what, e)),
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::FailedPrecondition(format!("no endpoint of {} serves pulls", self.registry))
        }))
    }

    /// The client for pushing to `reference` (the first endpoint with
    /// `push`), with credentials stored for it, and the reference as it
    /// serves it.
    pub async fn client(&self, reference: &Reference) -> Result<(&Client, Reference)> {
        let ep = self.endpoints.iter().find(|e| e.endpoint.push).ok_or_else(|| {
            Error::FailedPrecondition(format!("no endpoint of {} takes pushes", self.registry))
        })?;
        let at = ep.rewrite(reference);
        let (client, auth) = self.session(ep, &at).await?;
        client.store_auth_if_needed(at.resolve_registry(), auth).await;
        Ok((client, at))
    }
}

impl Registry {
    /// Checks this registry's credentials as `docker login` does: the v2
    /// ping at the server (not a mirror), then the credentials against the
    /// challenge it answers with (basic: the ping again with them; bearer:
    /// the token exchange at its realm). oci-client hands basic credentials
    /// on without trying them, so the requests are made here.
    pub async fn login(&self) -> Result<()> {
        let ep = self
            .endpoints
            .iter()
            .rev()
            .find(|e| e.endpoint.push)
            .or(self.endpoints.last())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("registry {} has no endpoint", self.registry))
            })?;
        let e = &ep.endpoint;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(e.skip_verify)
            .user_agent(concat!("molde/", env!("CARGO_PKG_VERSION")));
        for pem in &ep.ca {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|err| Error::InvalidArgument(format!("a CA file of {}: {err}", self.registry)))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|err| Error::Internal(format!("an HTTP client for {}: {err}", self.registry)))?;
        // Docker Hub's name is not its API's host (oci-client maps it the same way).
        let host = if e.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            e.host.as_str()
        };
        let url = format!("{}://{host}/v2/", if e.plain_http { "http" } else { "https" });
        let unreachable = |err: reqwest::Error| {
            Error::Unavailable(format!("cannot reach registry {} at {url}: {err}", self.registry))
        };
        let ping = http.get(&url).send().await.map_err(unreachable)?;
        if ping.status().is_success() {
            return Ok(()); // a registry that asks for no credentials takes any
        }
        if ping.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::Unavailable(format!(
                "registry {}: {url} answered {}, not a registry's 200 or 401",
                self.registry,
                ping.status()
            )));
        }
        let RegistryAuth::Basic(user, password) = &self.auth else {
            return Err(Error::PermissionDenied(format!(
                "registry {} asks for credentials; give a username and password",
                self.registry
            )));
        };
        let challenge = ping
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let refused = |status: reqwest::StatusCode| {
            Error::PermissionDenied(format!(
                "registry {} refused the login of {user:?} ({status}): wrong username or password",
                self.registry
            ))
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge.as_str(), ""));
        let answer = if scheme.eq_ignore_ascii_case("bearer") {
            let param = |key: &str| {
                params.split(',').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    k.eq_ignore_ascii_case(key)
                        .then(|| v.trim_matches('"').to_string())
                })
            };
            let realm = param("realm").ok_or_else(|| {
                Error::Unavailable(format!(
                    "registry {}: its challenge {challenge:?} names no realm",
                    self.registry
                ))
            })?;
            let mut query = vec![("account", user.clone())];
            if let Some(service) = param("service") {
                query.push(("service", service));
            }
            http.get(&realm)
                .query(&query)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(|err| {
                    Error::Unavailable(format!(
                        "cannot reach {}'s token service {realm}: {err}",
                        self.registry
                    ))
                })?
        } else {
            http.get(&url)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(unreachable)?
        };
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(refused(answer.status()))
        }
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
    // One line a user can act on: the registry that cannot be reached, or
    // that has no such image, not the HTTP client's chain of causes.
    let message = match &e {
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            let host = r
                .url()
                .and_then(|u| {
                    Some(format!(
                        "{}{}",
                        u.host_str()?,
                        u.port().map(|p| format!(":{p}")).unwrap_or_default()
                    ))
                })
                .unwrap_or_else(|| "the registry".into());
            let mut cause: &dyn std::error::Error = r;
            while let Some(c) = cause.source() {
                cause = c;
            }
            let why = if r.is_timeout() {
                "timed out".to_string()
            } else {
                cause.to_string()
            };
            format!("{what}: cannot reach registry {host}: {why}")
        }
        _ if code == Code::NotFound => {
            format!("{what}: not found (the registry has no such repository, tag or digest)")
        }
        _ => format!("{what}: {}", describe(&e)),
    };
    Error::Remote { code, message }
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
mod tests;
