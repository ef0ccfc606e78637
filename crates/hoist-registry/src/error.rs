//! The registry client's error type.
//!
//! Every failure the client can report is a variant of [`Error`]. Each carries what a user needs to act
//! (the URL, the registry's own error codes, the digest that did not match) and answers two questions
//! callers ask: [`Error::is_retryable`] (can trying again help?) and [`Error::retry_after`] (how long did
//! the registry ask us to wait?).

use std::time::Duration;

use http::StatusCode;

use crate::auth::challenge::ChallengeError;
use crate::auth::credentials::CredentialError;
use crate::error_body::{ErrorCode, RegistryError};
use crate::multipart::MultipartError;
use crate::range::RangeError;
use crate::reference::ReferenceError;

/// A specialised `Result` for registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the registry client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request never got an HTTP answer: DNS, connect, TLS, reset, or a timeout.
    #[error("{method} {url}: {kind}: {source}")]
    Transport {
        /// The request's method.
        method: String,
        /// The request's URL (never with credentials in it).
        url: String,
        /// What kind of transport failure this was.
        kind: TransportKind,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A response body stopped moving for longer than the stall timeout.
    #[error("{url}: no data received for {after:?} (stalled transfer)")]
    Stalled {
        /// The URL whose body stalled.
        url: String,
        /// How long nothing arrived.
        after: Duration,
    },

    /// The registry answered with an error status.
    #[error("{method} {url}: {status}{}", format_details(details))]
    Status {
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: StatusCode,
        /// The registry's error codes from the body, if it sent any.
        details: Vec<RegistryError>,
        /// The `Retry-After` the registry sent, if any.
        retry_after: Option<Duration>,
    },

    /// Authentication failed or the credentials do not grant the requested access.
    #[error("{registry}: authentication failed for {scope}: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The access that was asked for (for example `repository:foo:pull`).
        scope: String,
        /// What went wrong, in words.
        reason: String,
    },

    /// The token service failed.
    #[error("token service {realm}: {reason}")]
    Token {
        /// The token endpoint.
        realm: String,
        /// What went wrong.
        reason: String,
        /// Whether a retry may help (the service failed, rather than refused).
        retryable: bool,
    },

    /// Content did not hash to the digest it was fetched by.
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Where the content came from.
        url: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },

    /// Content was shorter or longer than announced.
    #[error("size mismatch for {url}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// Where the content came from.
        url: String,
        /// Bytes expected.
        expected: u64,
        /// Bytes received (at least).
        actual: u64,
    },

    /// A response was larger than the limit set for its kind (a manifest, a token, an error body).
    #[error("{what} from {url} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Where from.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// The registry's answer broke the protocol (a missing header, a malformed value).
    #[error("invalid response from {url}: {reason}")]
    InvalidResponse {
        /// The request's URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },

    /// The registry refused a partial (range) request: 400, 416 or 501. Callers fall back to fewer
    /// or larger ranges, or to a full GET.
    #[error("{url}: partial request refused: {status}")]
    BadPartialRequest {
        /// The request's URL.
        url: String,
        /// The status the registry answered.
        status: StatusCode,
    },

    /// A manifest's media type is not one this client understands.
    #[error("unsupported manifest media type {media_type:?} from {url}")]
    UnsupportedMediaType {
        /// The URL.
        url: String,
        /// The media type the registry reported.
        media_type: String,
    },

    /// The registry host is not usable with the configured transport security.
    #[error("{host}: {reason}")]
    Config {
        /// The registry host.
        host: String,
        /// What is wrong with the configuration.
        reason: String,
    },

    /// A reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// A `WWW-Authenticate` header could not be parsed.
    #[error("{url}: malformed authentication challenge: {source}")]
    Challenge {
        /// The URL whose answer carried it.
        url: String,
        /// The parse error.
        #[source]
        source: ChallengeError,
    },

    /// A `401` whose `WWW-Authenticate` offers nothing hoist can answer (no Basic or Bearer
    /// challenge, or a header that is not text). Asking again gets the same answer.
    #[error("{url} asks for authentication hoist cannot give: {reason}")]
    UnusableChallenge {
        /// The URL whose answer carried it.
        url: String,
        /// What is wrong with the challenge.
        reason: String,
    },

    /// Credentials could not be looked up.
    #[error(transparent)]
    Credentials(#[from] CredentialError),

    /// A range or `Content-Range` was invalid.
    #[error("{url}: {source}")]
    Range {
        /// The URL.
        url: String,
        /// The range error.
        #[source]
        source: RangeError,
    },

    /// A `multipart/byteranges` body was malformed.
    #[error("{url}: malformed multipart/byteranges body: {source}")]
    Multipart {
        /// The URL.
        url: String,
        /// The parse error.
        #[source]
        source: MultipartError,
    },

    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
}

/// The kinds of transport failure, for messages and retry decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// The connection could not be established (DNS, refused, unreachable, TLS handshake).
    Connect,
    /// The TLS handshake failed on a certificate: the registry's was not trusted (unknown CA,
    /// wrong name, expired) or it refused ours. Configure a CA file, a client certificate, or
    /// mark the host insecure; retrying cannot help.
    Certificate,
    /// The request or its answer's headers took longer than allowed.
    Timeout,
    /// The connection broke while the body was moving.
    Body,
    /// Anything else the HTTP stack reported.
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "cannot connect",
            TransportKind::Certificate => "TLS certificate rejected",
            TransportKind::Timeout => "timed out",
            TransportKind::Body => "connection broken mid-body",
            TransportKind::Other => "request failed",
        })
    }
}

fn format_details(details: &[RegistryError]) -> String {
    if details.is_empty() {
        return String::new();
    }
    let mut out = String::from(":");
    for d in details {
        out.push(' ');
        out.push_str(&d.to_string());
    }
    out
}

impl Error {
    /// Whether trying the same operation again may succeed.
    ///
    /// Transport failures, stalls, truncated or corrupt bodies, `408`, `429` and `5xx` answers are
    /// retryable; everything that says the request itself is wrong (`4xx`, bad references, a manifest
    /// of an unknown type) is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport {
                kind: TransportKind::Certificate,
                ..
            } => false,
            Error::Transport { .. } | Error::Stalled { .. } => true,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            Error::Status { status, .. } => {
                *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
            }
            Error::Token { retryable, .. } => *retryable,
            Error::Multipart { .. } | Error::InvalidResponse { .. } => true,
            Error::Unauthorized { .. }
            | Error::TooLarge { .. }
            | Error::BadPartialRequest { .. }
            | Error::UnsupportedMediaType { .. }
            | Error::Config { .. }
            | Error::Reference(_)
            | Error::Challenge { .. }
            | Error::UnusableChallenge { .. }
            | Error::Credentials(_)
            | Error::Range { .. }
            | Error::Cancelled => false,
        }
    }

    /// The delay the registry asked for with `Retry-After` (on `429` or `503`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the registry answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::BadPartialRequest { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The registry's error codes, when it sent an error body.
    pub fn error_codes(&self) -> impl Iterator<Item = &ErrorCode> {
        let details: &[RegistryError] = match self {
            Error::Status { details, .. } => details,
            _ => &[],
        };
        details.iter().map(|d| &d.code)
    }

    /// Whether this says the thing asked for does not exist (`404`, `MANIFEST_UNKNOWN`,
    /// `BLOB_UNKNOWN`, `NAME_UNKNOWN`).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
            || self.error_codes().any(|c| {
                matches!(
                    c,
                    ErrorCode::ManifestUnknown | ErrorCode::BlobUnknown | ErrorCode::NameUnknown
                )
            })
    }

    /// Whether this says access was refused (`401`, `403`, `DENIED`, `UNAUTHORIZED`).
    pub fn is_denied(&self) -> bool {
        matches!(self, Error::Unauthorized { .. })
            || matches!(
                self.status(),
                Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            )
            || self
                .error_codes()
                .any(|c| matches!(c, ErrorCode::Denied | ErrorCode::Unauthorized))
    }

    /// Whether the failure happened before any answer arrived (the host is unreachable): useful for
    /// falling back to another endpoint.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Connect,
                ..
            }
        )
    }

    pub(crate) fn transport(method: &http::Method, url: &str, err: reqwest::Error) -> Error {
        let kind = if certificate_problem(&err) {
            TransportKind::Certificate
        } else if err.is_connect() {
            TransportKind::Connect
        } else if err.is_timeout() {
            TransportKind::Timeout
        } else if err.is_body() || err.is_decode() {
            TransportKind::Body
        } else {
            TransportKind::Other
        };
        Error::Transport {
            method: method.to_string(),
            url: url.to_owned(),
            kind,
            source: Box::new(err.without_url()),
        }
    }
}

/// Whether a TLS certificate (the server's, or the refusal of ours) is behind `err`.
fn certificate_problem(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        // An `io::Error`'s `source()` skips the error it wraps (often another `io::Error`
        // wrapping the TLS error): descend through `get_ref` instead.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            cause = io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static));
            continue;
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::AlertReceived(
                        rustls::AlertDescription::BadCertificate
                            | rustls::AlertDescription::CertificateRequired
                            | rustls::AlertDescription::UnknownCA
                            | rustls::AlertDescription::CertificateUnknown
                            | rustls::AlertDescription::CertificateExpired
                            | rustls::AlertDescription::CertificateRevoked
                            | rustls::AlertDescription::UnsupportedCertificate
                    )
            );
        }
        // After the handshake, a TLS alert reaches hyper as an `io::Error` holding only the
        // rustls error's text (a TLS 1.3 server refuses a missing client certificate there).
        let text = e.to_string();
        if let Some(alert) = text.strip_prefix("received fatal alert: ") {
            return alert.contains("Certificate") || alert == "UnknownCA";
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        Error::Status {
            method: "GET".into(),
            url: "http://r/v2/".into(),
            status: StatusCode::from_u16(code).unwrap(),
            details: vec![],
            retry_after: None,
        }
    }

    #[test]
    fn server_errors_and_throttling_are_retryable_client_errors_are_not() {
        for (code, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (416, false),
        ] {
            assert_eq!(status(code).is_retryable(), retryable, "status {code}");
        }
    }

    #[test]
    fn not_found_is_recognised_by_status_or_code() {
        assert!(status(404).is_not_found());
        let e = Error::Status {
            method: "GET".into(),
            url: "u".into(),
            status: StatusCode::BAD_REQUEST,
            details: vec![RegistryError {
                code: ErrorCode::ManifestUnknown,
                message: "manifest unknown".into(),
                detail: None,
            }],
            retry_after: None,
        };
        assert!(e.is_not_found());
        assert!(!status(500).is_not_found());
    }

    #[test]
    fn status_error_message_lists_registry_codes() {
        let e = Error::Status {
            method: "GET".into(),
            url: "http://r/v2/x/manifests/y".into(),
            status: StatusCode::NOT_FOUND,
            details: vec![RegistryError {
                code: ErrorCode::ManifestUnknown,
                message: "manifest unknown".into(),
                detail: None,
            }],
            retry_after: None,
        };
        let msg = e.to_string();
        assert!(msg.contains("404"), "{msg}");
        assert!(msg.contains("MANIFEST_UNKNOWN: manifest unknown"), "{msg}");
    }
}
