//! Certificates for a registry served over TLS: a throwaway CA, a server certificate for
//! `127.0.0.1` signed by it and, for mutual TLS, a client certificate signed by it too.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// What a TLS registry asks of its clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Any client may connect (server authentication only).
    #[default]
    None,
    /// Clients must present a certificate signed by the test CA (`http.tls.clientcas`).
    Required,
}

/// The PEM files of a TLS registry, all in its temporary directory.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signed the server (and client) certificates: what a client must trust.
    pub ca: PathBuf,
    /// The server certificate (SAN `127.0.0.1`).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (accepted when client certificates are required).
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
}

fn cert_err(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Generates the CA, server and client certificates into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<TlsFiles> {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hoist test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).map_err(cert_err)?;

    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(cert_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key_pem) = leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth)?;
    let (client_pem, client_key_pem) =
        leaf("hoist test client", ExtendedKeyUsagePurpose::ClientAuth)?;

    let files = TlsFiles {
        ca: dir.join("tls-ca.pem"),
        server_cert: dir.join("tls-server.pem"),
        server_key: dir.join("tls-server-key.pem"),
        client_cert: dir.join("tls-client.pem"),
        client_key: dir.join("tls-client-key.pem"),
    };
    write(&files.ca, &ca.pem())?;
    write(&files.server_cert, &server_pem)?;
    write(&files.server_key, &server_key_pem)?;
    write(&files.client_cert, &client_pem)?;
    write(&files.client_key, &client_key_pem)?;
    Ok(files)
}
