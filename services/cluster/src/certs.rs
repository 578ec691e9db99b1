//! The cluster's certificates: one CA (`molde cluster init`), a
//! certificate per node signed by it (`molde cluster join`), for both ends
//! of a peer connection, and certificates for administrators (`molde
//! cluster join --admin`). A peer whose certificate the cluster's CA did not
//! sign is refused, in either direction.
//!
//! A certificate carries its role in its subject's organizational unit:
//! `molde-node` (a node: the peer role, which may read content and look up
//! images and build-cache records of other nodes, nothing else) or
//! `molde-admin` (may run any command on any node). Node and admin
//! certificates are valid for 365 days unless `--days` says otherwise, the
//! CA for ten years; `molde cluster renew` issues a certificate again, and
//! `molde cluster revoke` has every node refuse one.
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key          the cluster's CA (the key only where nodes join)
//! DIR/NAME.crt  DIR/NAME.key      NAME's certificate (DNS name NAME) and key
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use molde_common::errdefs::Error;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// How long a node or admin certificate is valid unless told otherwise.
pub const DEFAULT_DAYS: u32 = 365;
/// How long the cluster's CA is valid: renew the CA (a new `init` and
/// every certificate joined again) before then.
pub const CA_DAYS: u32 = 3650;

/// What a certificate lets its holder do on a node's peer listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another node: content reads, image and build-cache lookups.
    Peer,
    /// An administrator: any command on any node.
    Admin,
}

impl Role {
    fn unit(self) -> &'static str {
        match self {
            Role::Peer => "molde-node",
            Role::Admin => "molde-admin",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Peer => "peer",
            Role::Admin => "admin",
        }
    }
}

fn write_private(path: &Path, data: &str, replace: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A replacement is written beside and renamed over: never half a key.
    let target = if replace {
        path.with_extension("tmp")
    } else {
        path.to_path_buf()
    };
    let _ = replace.then(|| std::fs::remove_file(&target));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(Error::io(target.display().to_string()))?;
    f.write_all(data.as_bytes())
        .map_err(Error::io(target.display().to_string()))?;
    if replace {
        std::fs::rename(&target, path).map_err(Error::io(path.display().to_string()))?;
    }
    Ok(())
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> Error {
    match e {
        rustls_pki_types::pem::Error::Io(io) => Error::io(path.display().to_string())(io),
        e => Error::InvalidArgument(format!("{}: {e}", path.display())),
    }
}

/// Key generation, signing and TLS set-up fail only on a broken build or
/// key material, never on what a user typed.
fn crypto_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cluster certificates: {e}"))
}

fn validity(p: &mut rcgen::CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour back: clocks of the nodes differ a little.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days as i64);
}

/// Writes a new CA into `dir`; refuses to replace one.
pub fn init(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir.display().to_string()))?;
    let crt = dir.join("ca.crt");
    if crt.exists() {
        return Err(Error::FailedPrecondition(format!(
            "{} exists: this directory holds a cluster CA already",
            crt.display()
        )));
    }
    let key = rcgen::KeyPair::generate().map_err(crypto_error)?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(crypto_error)?;
    validity(&mut p, CA_DAYS);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "molde cluster CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).map_err(crypto_error)?;
    write_private(&dir.join("ca.key"), &key.serialize_pem(), false)?;
    std::fs::write(&crt, cert.pem()).map_err(Error::io(crt.display().to_string()))?;
    Ok(crt)
}

/// Writes node `name`'s certificate and key into `dir`, signed by its CA,
/// valid for `days`.
pub fn join(dir: &Path, name: &str, days: u32) -> Result<PathBuf, Error> {
    issue(dir, name, Role::Peer, days, false)
}

/// Writes administrator `name`'s certificate and key into `dir`.
pub fn join_admin(dir: &Path, name: &str, days: u32) -> Result<PathBuf, Error> {
    issue(dir, name, Role::Admin, days, false)
}

/// Issues `name`'s certificate again, with a new key, in the role it had,
/// valid for `days` from now; the old files are replaced.
pub fn renew(dir: &Path, name: &str, days: u32) -> Result<PathBuf, Error> {
    let old = Presented::load(&dir.join(format!("{name}.crt")))?;
    issue(dir, name, old.role, days, true)
}

fn issue(dir: &Path, name: &str, role: Role, days: u32, replace: bool) -> Result<PathBuf, Error> {
    crate::check_node_name(name)?;
    if days == 0 {
        return Err(Error::InvalidArgument("--days must be at least 1".into()));
    }
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).map_err(Error::io(dir.join(f).display().to_string()));
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")?)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.join("ca.key").display())))?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("ca.crt")?, ca_key)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.join("ca.crt").display())))?;
    let crt = dir.join(format!("{name}.crt"));
    if !replace && crt.exists() {
        return Err(Error::FailedPrecondition(format!(
            "{} exists: renew it with molde cluster renew",
            crt.display()
        )));
    }
    let key = rcgen::KeyPair::generate().map_err(crypto_error)?;
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(crypto_error)?;
    validity(&mut p, days);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, role.unit());
    p.extended_key_usages = match role {
        Role::Peer => vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Admin => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
    };
    let cert = p.signed_by(&key, &issuer).map_err(crypto_error)?;
    write_private(&dir.join(format!("{name}.key")), &key.serialize_pem(), replace)?;
    let tmp = crt.with_extension("crt.tmp");
    std::fs::write(&tmp, cert.pem()).map_err(Error::io(tmp.display().to_string()))?;
    std::fs::rename(&tmp, &crt).map_err(Error::io(crt.display().to_string()))?;
    Ok(crt)
}

/// What a certificate says of its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub name: String,
    pub role: Role,
    /// The serial number, in hex: what a revocation names.
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl Presented {
    /// Reads a certificate (DER).
    pub fn of(der: &[u8]) -> Result<Presented, Error> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::InvalidArgument(format!("not a certificate: {e}")))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|n| n.as_str().ok())
            .ok_or_else(|| Error::InvalidArgument("the certificate names no one".into()))?
            .to_string();
        let role = match subject
            .iter_organizational_unit()
            .next()
            .and_then(|u| u.as_str().ok())
        {
            Some("molde-admin") => Role::Admin,
            // Certificates from before roles: nodes.
            _ => Role::Peer,
        };
        Ok(Presented {
            name,
            role,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Reads a certificate file (PEM).
    pub fn load(path: &Path) -> Result<Presented, Error> {
        let der = CertificateDer::from_pem_file(path).map_err(|e| pem_error(path, e))?;
        Presented::of(&der).map_err(|e| e.context(path.display()))
    }
}

/// A node's identity for peer connections.
#[derive(Clone)]
pub struct Identity {
    pub name: String,
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    /// Node `name`'s certificate and key and the CA, from `dir`.
    pub fn load(dir: &Path, name: &str) -> Result<Identity, Error> {
        let certs = |f: PathBuf| -> Result<Vec<CertificateDer<'static>>, Error> {
            CertificateDer::pem_file_iter(&f)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| pem_error(&f, e))
        };
        let key = dir.join(format!("{name}.key"));
        let crt = dir.join(format!("{name}.crt"));
        let chain = certs(crt.clone())?;
        // A certificate is bound to the name it was issued for: another
        // node's files under this name are refused.
        let leaf = chain
            .first()
            .ok_or_else(|| Error::InvalidArgument(format!("{}: no certificate", crt.display())))?;
        let presented = Presented::of(leaf).map_err(|e| e.context(crt.display()))?;
        if presented.name != name {
            return Err(Error::PermissionDenied(format!(
                "{} was issued to {:?}, not {name:?}",
                crt.display(),
                presented.name
            )));
        }
        Ok(Identity {
            name: name.to_string(),
            ca: certs(dir.join("ca.crt"))?,
            chain,
            key: Arc::new(PrivateKeyDer::from_pem_file(&key).map_err(|e| pem_error(&key, e))?),
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .map_err(|e| Error::InvalidArgument(format!("the cluster CA: {e}")))?;
        }
        Ok(Arc::new(roots))
    }

    /// The server side: only peers with a certificate from the cluster's CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
                .build()
                .map_err(crypto_error)?;
        let mut c = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(crypto_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(crypto_error)?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(c)
    }

    /// The client side: this node's certificate, and only servers the
    /// cluster's CA signed.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, Error> {
        let mut c = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(crypto_error)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(crypto_error)?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_chains_to_the_ca_and_names_the_node() {
        let d = tempfile::tempdir().unwrap();
        init(d.path()).unwrap();
        assert!(init(d.path()).is_err(), "an existing CA is kept");
        join(d.path(), "node-a", DEFAULT_DAYS).unwrap();
        let mode = std::fs::metadata(d.path().join("node-a.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let id = Identity::load(d.path(), "node-a").unwrap();
        assert!(id.server_config().is_ok() && id.client_config().is_ok());
        assert!(join(d.path(), "bad/name", DEFAULT_DAYS).is_err());
        assert!(
            join(d.path(), "node-a", DEFAULT_DAYS).is_err(),
            "an existing certificate is kept"
        );
        let p = Presented::load(&d.path().join("node-a.crt")).unwrap();
        assert_eq!((p.name.as_str(), p.role), ("node-a", Role::Peer));
        let days = (p.not_after - time::OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((364..=365).contains(&days), "{days} days");
    }

    #[test]
    fn admins_have_their_role_and_renewal_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        init(d.path()).unwrap();
        join_admin(d.path(), "alice", 30).unwrap();
        let before = Presented::load(&d.path().join("alice.crt")).unwrap();
        assert_eq!(before.role, Role::Admin);
        renew(d.path(), "alice", 90).unwrap();
        let after = Presented::load(&d.path().join("alice.crt")).unwrap();
        assert_eq!(after.role, Role::Admin);
        assert_ne!(after.serial, before.serial);
        assert!(after.not_after > before.not_after);
    }

    #[test]
    fn a_certificate_under_another_name_is_refused() {
        let d = tempfile::tempdir().unwrap();
        init(d.path()).unwrap();
        join(d.path(), "node-a", DEFAULT_DAYS).unwrap();
        std::fs::copy(d.path().join("node-a.crt"), d.path().join("node-b.crt")).unwrap();
        std::fs::copy(d.path().join("node-a.key"), d.path().join("node-b.key")).unwrap();
        let e = Identity::load(d.path(), "node-b").err().unwrap();
        assert_eq!(e.kind(), molde_common::errdefs::Kind::PermissionDenied);
        assert!(e.to_string().contains("issued to \"node-a\""), "{e}");
    }
}
