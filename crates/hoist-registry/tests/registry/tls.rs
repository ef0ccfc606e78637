//! A registry served over TLS (certificates from a CA made for the test): the per-host TLS
//! settings (extra CA, client certificate, insecure) against the real registry.

use hoist_registry::{Error, HostConfig, RegistryClient, Scheme, TransportKind};
use hoist_test_support::{ClientAuth, Registry};

use crate::{blob, digest_of, read_all};

async fn tls_registry(client_auth: ClientAuth) -> Registry {
    Registry::builder()
        .tls(client_auth)
        .start()
        .await
        .expect("start a TLS registry")
}

/// Pushes a blob and reads it back through `client`: the whole path, not just a ping.
async fn round_trip(client: &RegistryClient, registry: &Registry) {
    let endpoint = client.resolve(&registry.host()).await.unwrap();
    assert_eq!(
        endpoint.scheme,
        Scheme::Https,
        "a TLS registry is reached over https"
    );
    let repo = client.repository(endpoint, "tls/blob");
    let data = blob(300_000, 7);
    let digest = digest_of(&data);
    repo.push_blob_bytes(&digest, data.clone()).await.unwrap();
    let got = repo.get_blob(&digest).await.unwrap();
    assert_eq!(read_all(got.body).await, data.to_vec());
}

fn assert_certificate_refused(err: &Error) {
    assert!(
        matches!(
            err,
            Error::Transport {
                kind: TransportKind::Certificate,
                ..
            }
        ),
        "expected a refused certificate, got {err:?}"
    );
    assert!(
        !err.is_retryable(),
        "a refused certificate is not worth a retry: {err}"
    );
    let text = err.to_string();
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_registry_signed_by_a_configured_ca_is_trusted_over_https() {
    let registry = tls_registry(ClientAuth::None).await;
    let files = registry.tls_files().unwrap();
    let client = RegistryClient::builder()
        .host(
            registry.host(),
            HostConfig::default().with_ca_file(&files.ca),
        )
        .build()
        .unwrap();
    round_trip(&client, &registry).await;
}

#[tokio::test]
async fn a_registry_signed_by_an_unknown_ca_is_refused_with_a_certificate_error() {
    let registry = tls_registry(ClientAuth::None).await;
    let client = RegistryClient::builder().build().unwrap();
    let endpoint = hoist_registry::Endpoint::new(registry.host(), Scheme::Https);
    let err = client.ping(&endpoint).await.unwrap_err();
    assert_certificate_refused(&err);
    // Resolving a loopback host may try plain HTTP after HTTPS; the answer must still be the
    // certificate problem, the one a user can act on, not the plain-HTTP attempt's.
    let err = client.resolve(&registry.host()).await.unwrap_err();
    assert_certificate_refused(&err);
}

#[tokio::test]
async fn an_insecure_host_accepts_a_certificate_it_cannot_verify() {
    let registry = tls_registry(ClientAuth::None).await;
    let client = RegistryClient::builder()
        .host(registry.host(), HostConfig::insecure())
        .build()
        .unwrap();
    round_trip(&client, &registry).await;
}

#[tokio::test]
async fn a_registry_requiring_client_certificates_accepts_the_configured_one_only() {
    let registry = tls_registry(ClientAuth::Required).await;
    let files = registry.tls_files().unwrap();
    let with_cert = RegistryClient::builder()
        .host(
            registry.host(),
            HostConfig::default()
                .with_ca_file(&files.ca)
                .with_client_cert(&files.client_cert, &files.client_key),
        )
        .build()
        .unwrap();
    round_trip(&with_cert, &registry).await;

    let without = RegistryClient::builder()
        .host(
            registry.host(),
            HostConfig::default().with_ca_file(&files.ca),
        )
        .build()
        .unwrap();
    let endpoint = hoist_registry::Endpoint::new(registry.host(), Scheme::Https);
    let err = without.ping(&endpoint).await.unwrap_err();
    // TLS 1.3 refuses a missing client certificate after the client's side of the handshake:
    // the client sees the server's alert or, when the server closes first, a closed connection.
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_configuration_error_naming_the_file() {
    let missing = std::path::Path::new("/nonexistent/hoist-ca.pem");
    let err = RegistryClient::builder()
        .host("127.0.0.1:1", HostConfig::default().with_ca_file(missing))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/hoist-ca.pem"),
        "{err}"
    );
}
