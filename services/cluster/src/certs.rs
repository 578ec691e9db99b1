//! The cluster's certificates: one CA (`molde cluster init`), and a
//! certificate per node signed by it (`molde cluster join`), for both ends
//! of a peer connection. A peer whose certificate the cluster's CA did not
//! sign is refused, in either direction.
//!
//! ```text
//! DIR/ca.crt  DIR/ca.key          the cluster's CA (the key only where nodes join)
//! DIR/NAME.crt  DIR/NAME.key      node NAME's certificate (DNS name NAME) and key
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a new CA into `dir`; refuses to replace one.
pub fn init(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let crt = dir.join("ca.crt");
    if crt.exists() {
        return Err(format!(
            "{} exists: this directory holds a cluster CA already",
            crt.display()
        ));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "molde cluster CA");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    write_private(&dir.join("ca.key"), &key.serialize_pem())?;
    std::fs::write(&crt, cert.pem()).map_err(|e| format!("{}: {e}", crt.display()))?;
    Ok(crt)
}

/// Writes node `name`'s certificate and key into `dir`, signed by its CA.
pub fn join(dir: &Path, name: &str) -> Result<PathBuf, String> {
    crate::check_node_name(name)?;
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()));
    let ca_key = rcgen::KeyPair::from_pem(&read("ca.key")?).map_err(|e| format!("ca.key: {e}"))?;
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&read("ca.crt")?, ca_key).map_err(|e| format!("ca.crt: {e}"))?;
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    let crt = dir.join(format!("{name}.crt"));
    write_private(&dir.join(format!("{name}.key")), &key.serialize_pem())?;
    std::fs::write(&crt, cert.pem()).map_err(|e| format!("{}: {e}", crt.display()))?;
    Ok(crt)
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
    pub fn load(dir: &Path, name: &str) -> Result<Identity, String> {
        let certs = |f: PathBuf| -> Result<Vec<CertificateDer<'static>>, String> {
            CertificateDer::pem_file_iter(&f)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", f.display()))
        };
        let key = dir.join(format!("{name}.key"));
        Ok(Identity {
            name: name.to_string(),
            ca: certs(dir.join("ca.crt"))?,
            chain: certs(dir.join(format!("{name}.crt")))?,
            key: Arc::new(PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?),
        })
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(|e| format!("the cluster CA: {e}"))?;
        }
        Ok(Arc::new(roots))
    }

    /// The server side: only peers with a certificate from the cluster's CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, String> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, Self::provider())
                .build()
                .map_err(|e| e.to_string())?;
        let mut c = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(c)
    }

    /// The client side: this node's certificate, and only servers the
    /// cluster's CA signed.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut c = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
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
        join(d.path(), "node-a").unwrap();
        let mode = std::fs::metadata(d.path().join("node-a.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let id = Identity::load(d.path(), "node-a").unwrap();
        assert!(id.server_config().is_ok() && id.client_config().is_ok());
        assert!(join(d.path(), "bad/name").is_err());
    }
}
