//! TLS for `serve`: the certificate chain and private key (PEM files) as the rustls acceptor
//! pgwire answers SSLRequest with, so clients can use `sslmode=verify-full` with the server's CA.

use std::path::Path;
use std::sync::Arc;

use pgwire::tokio::TlsAcceptor;
use pgwire::tokio::tokio_rustls::rustls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ServeError;

/// The ALPN protocol name PostgreSQL 17 clients offer (direct TLS negotiation).
const ALPN_POSTGRESQL: &[u8] = b"postgresql";

fn tls_error(path: &Path, why: impl std::fmt::Display) -> ServeError {
    ServeError::Tls(format!("{}: {why}", path.display()))
}

/// A TLS acceptor from a PEM certificate chain (server certificate first) and its PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error(cert, format!("cannot read it as PEM certificates ({e}); pass --tls-cert a PEM file")))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert, format!("is not a PEM certificate chain ({e}); pass --tls-cert a PEM file")))?;
    if certs.is_empty() {
        return Err(tls_error(cert, "holds no certificate; pass --tls-cert the server certificate (PEM), then its chain"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_error(key, format!("holds no usable private key ({e}); pass --tls-key the certificate's key (PEM)")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_error(key, format!("does not match the certificate or is not supported ({e})")))?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Write a private CA (`ca.pem`) and a certificate it signed for `names` (DNS names or IP
/// addresses: `server.pem`, `server.key`) into `dir`, unless a certificate is there already: the
/// compose stack's (`tickerlake serve-cert`), for anyone without a CA of their own. Clients
/// verify the server with `sslrootcert=ca.pem sslmode=verify-full`. Returns whether it wrote.
pub fn generate(dir: &Path, names: &[String]) -> Result<bool, ServeError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let fail = |what: &str, e: &dyn std::fmt::Display| ServeError::Tls(format!("{}: cannot {what}: {e}", dir.display()));
    if dir.join("server.pem").exists() && dir.join("server.key").exists() && dir.join("ca.pem").exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(|e| fail("create the directory", &e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("make a CA", &e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "tickerlake serve CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(|e| fail("make a key", &e))?)
        .map_err(|e| fail("sign the CA", &e))?;
    // rcgen turns names that parse as IP addresses into IP subject alternative names.
    let mut params = CertificateParams::new(names.to_vec()).map_err(|e| fail("use these names", &e))?;
    params.distinguished_name.push(DnType::CommonName, names.first().map_or("tickerlake serve", String::as_str));
    let key = KeyPair::generate().map_err(|e| fail("make a key", &e))?;
    let cert = params.signed_by(&key, &ca).map_err(|e| fail("sign the certificate", &e))?;
    let write = |name: &str, text: String, mode: u32| -> Result<(), ServeError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| fail(&format!("write {name}"), &e))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| fail(&format!("write {name}"), &e))
    };
    // The CA's key is not kept: nothing else is ever signed with it.
    write("ca.pem", ca.pem(), 0o644)?;
    write("server.key", key.serialize_pem(), 0o600)?;
    write("server.pem", cert.pem(), 0o644)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_accepted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["serve".to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()];
        assert!(generate(dir.path(), &names).unwrap());
        let first = std::fs::read(dir.path().join("server.pem")).unwrap();
        assert!(acceptor(&dir.path().join("server.pem"), &dir.path().join("server.key")).is_ok());
        assert!(!generate(dir.path(), &names).unwrap(), "an existing certificate is kept");
        assert_eq!(std::fs::read(dir.path().join("server.pem")).unwrap(), first);
        let err = acceptor(&dir.path().join("ca.pem"), &dir.path().join("missing.key")).err().unwrap();
        assert!(err.is_permanent() && err.to_string().contains("missing.key"), "{err}");
    }
}
