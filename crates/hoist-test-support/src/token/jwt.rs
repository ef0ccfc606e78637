//! Token signing: an ES256 key with a self-signed certificate that the registry trusts.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::policy::Access;
use crate::error::{Error, Result};

/// The claims distribution reads from a bearer token.
#[derive(Debug, Serialize)]
pub(crate) struct Claims<'a> {
    pub(crate) iss: &'a str,
    pub(crate) sub: &'a str,
    pub(crate) aud: &'a str,
    pub(crate) exp: i64,
    pub(crate) nbf: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    pub(crate) access: &'a [Access],
}

/// An ECDSA P-256 key and its self-signed certificate.
pub(crate) struct SigningKey {
    encoding: EncodingKey,
    certificate_pem: String,
    /// The certificate's DER, base64 (standard alphabet), for the `x5c` header.
    x5c: String,
}

impl SigningKey {
    /// Generates a fresh key and a self-signed certificate for it.
    pub(crate) fn generate(common_name: &str) -> Result<SigningKey> {
        let cert_err = |e: rcgen::Error| Error::Certificate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.self_signed(&key).map_err(cert_err)?;
        let encoding = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes())
            .map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(SigningKey {
            encoding,
            certificate_pem: cert.pem(),
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.der()),
        })
    }

    /// The certificate, PEM-encoded.
    pub(crate) fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Signs `claims` as a compact JWS (ES256) whose `x5c` header carries the certificate,
    /// which is how distribution finds the key to verify it with.
    pub(crate) fn sign(&self, claims: &Claims<'_>) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        header.x5c = Some(vec![self.x5c.clone()]);
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp (`2024-05-01T12:00:00Z`).
pub(crate) fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn signed_tokens_carry_the_certificate_and_verify_with_its_key() {
        let key = SigningKey::generate("test").unwrap();
        let access = [Access {
            resource_type: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let claims = Claims {
            iss: "issuer",
            sub: "someone",
            aud: "service",
            exp: 4_102_444_799,
            nbf: 0,
            iat: 0,
            jti: "1".into(),
            access: &access,
        };
        let token = key.sign(&claims).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        let der = base64::engine::general_purpose::STANDARD
            .decode(&header.x5c.unwrap()[0])
            .unwrap();
        // The certificate's public key verifies the signature.
        let pem = key.certificate_pem().to_owned();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let decoding =
            jsonwebtoken::DecodingKey::from_ec_pem(rcgen_public_key_pem(&der).as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["service"]);
        validation.set_issuer(&["issuer"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims["access"][0]["name"], "a/b");
    }

    /// Extracts the SubjectPublicKeyInfo of a DER certificate as PEM.
    fn rcgen_public_key_pem(der: &[u8]) -> String {
        // A P-256 SPKI is 91 bytes and starts with this fixed prefix.
        let prefix = [
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        let start = der.windows(prefix.len()).position(|w| w == prefix).unwrap();
        let spki = &der[start..start + 91];
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki)
        )
    }
}
