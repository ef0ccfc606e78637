//! Registry error bodies: `{"errors":[{"code":…,"message":…,"detail":…}]}`.
//!
//! [`parse_error_body`] turns an error response's body into [`RegistryError`]s with typed
//! [`ErrorCode`]s. It is tolerant: missing or extra fields are fine, a single error object in
//! place of the array is accepted, and a body that is not such JSON (HTML from a proxy, empty,
//! over [`MAX_ERROR_BODY_LEN`]) gives `None`, so the caller falls back to the HTTP status.
//! Messages come from the server: `Display` escapes control characters and shortens them.

use std::fmt;

/// Error bodies longer than this are not parsed; read at most this many bytes.
pub const MAX_ERROR_BODY_LEN: usize = 64 * 1024;
/// At most this many errors are kept from one body.
pub const MAX_ERRORS: usize = 64;
/// `Display` shortens messages and details to this many characters.
const DISPLAY_LIMIT: usize = 500;

/// A registry error code (distribution spec, plus Docker's `TOOMANYREQUESTS`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `BLOB_UNKNOWN`: the blob is not in the repository.
    BlobUnknown,
    /// `BLOB_UPLOAD_INVALID`: the upload failed; start a new one.
    BlobUploadInvalid,
    /// `BLOB_UPLOAD_UNKNOWN`: the upload session does not exist (expired or cancelled).
    BlobUploadUnknown,
    /// `DIGEST_INVALID`: the content does not match the digest.
    DigestInvalid,
    /// `MANIFEST_BLOB_UNKNOWN`: the manifest references a blob the repository lacks.
    ManifestBlobUnknown,
    /// `MANIFEST_INVALID`: the manifest is invalid.
    ManifestInvalid,
    /// `MANIFEST_UNKNOWN`: no such manifest.
    ManifestUnknown,
    /// `MANIFEST_UNVERIFIED`: the manifest signature failed verification (schema 1).
    ManifestUnverified,
    /// `NAME_INVALID`: invalid repository name.
    NameInvalid,
    /// `NAME_UNKNOWN`: no such repository.
    NameUnknown,
    /// `SIZE_INVALID`: the content length does not match.
    SizeInvalid,
    /// `TAG_INVALID`: invalid tag.
    TagInvalid,
    /// `UNAUTHORIZED`: authentication required.
    Unauthorized,
    /// `DENIED`: access denied.
    Denied,
    /// `UNSUPPORTED`: the operation is not supported.
    Unsupported,
    /// `TOOMANYREQUESTS`: rate limited; retry later.
    TooManyRequests,
    /// `RANGE_INVALID`: invalid range in an upload.
    RangeInvalid,
    /// `PAGINATION_NUMBER_INVALID`: invalid `n` for pagination.
    PaginationNumberInvalid,
    /// Any other code, as sent.
    Unknown(String),
}

static CODES: [(&str, ErrorCode); 18] = [
    ("BLOB_UNKNOWN", ErrorCode::BlobUnknown),
    ("BLOB_UPLOAD_INVALID", ErrorCode::BlobUploadInvalid),
    ("BLOB_UPLOAD_UNKNOWN", ErrorCode::BlobUploadUnknown),
    ("DIGEST_INVALID", ErrorCode::DigestInvalid),
    ("MANIFEST_BLOB_UNKNOWN", ErrorCode::ManifestBlobUnknown),
    ("MANIFEST_INVALID", ErrorCode::ManifestInvalid),
    ("MANIFEST_UNKNOWN", ErrorCode::ManifestUnknown),
    ("MANIFEST_UNVERIFIED", ErrorCode::ManifestUnverified),
    ("NAME_INVALID", ErrorCode::NameInvalid),
    ("NAME_UNKNOWN", ErrorCode::NameUnknown),
    ("SIZE_INVALID", ErrorCode::SizeInvalid),
    ("TAG_INVALID", ErrorCode::TagInvalid),
    ("UNAUTHORIZED", ErrorCode::Unauthorized),
    ("DENIED", ErrorCode::Denied),
    ("UNSUPPORTED", ErrorCode::Unsupported),
    ("TOOMANYREQUESTS", ErrorCode::TooManyRequests),
    ("RANGE_INVALID", ErrorCode::RangeInvalid),
    (
        "PAGINATION_NUMBER_INVALID",
        ErrorCode::PaginationNumberInvalid,
    ),
];

impl ErrorCode {
    /// The code for `code`, compared case-insensitively; unknown codes are kept as sent.
    pub fn parse(code: &str) -> Self {
        CODES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(code))
            .map_or_else(|| Self::Unknown(code.to_owned()), |(_, c)| c.clone())
    }

    /// The code as the spec spells it (unknown codes as sent).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unknown(code) => code,
            known => CODES
                .iter()
                .find(|(_, c)| c == known)
                .map_or("", |(name, _)| name),
        }
    }

    /// Whether the same request may succeed later (rate limiting).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::TooManyRequests)
    }

    /// Whether the code says the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::BlobUnknown | Self::ManifestUnknown | Self::NameUnknown | Self::BlobUploadUnknown
        )
    }

    /// Whether the code is about authentication or authorisation.
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Unauthorized | Self::Denied)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sanitise(self.as_str()))
    }
}

/// One error from a registry error body.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryError {
    /// The code (`Unknown("")` when the entry had none).
    pub code: ErrorCode,
    /// The message (empty when the entry had none).
    pub message: String,
    /// The detail, any JSON, when present and not null.
    pub detail: Option<serde_json::Value>,
}

impl fmt::Display for RegistryError {
    /// `CODE: message (detail)`, with control characters escaped and long text shortened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = sanitise(self.code.as_str());
        let code = if code.is_empty() {
            "UNKNOWN".to_owned()
        } else {
            code
        };
        write!(f, "{code}")?;
        if !self.message.is_empty() {
            write!(f, ": {}", sanitise(&self.message))?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " ({})", sanitise(&detail.to_string()))?;
        }
        Ok(())
    }
}

/// Escapes control characters (terminal escapes included) and shortens to [`DISPLAY_LIMIT`].
fn sanitise(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == DISPLAY_LIMIT {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The errors of a registry error body, or `None` when the body is not one (not JSON, no
/// `errors`, no usable entry, or longer than [`MAX_ERROR_BODY_LEN`]).
pub fn parse_error_body(body: &[u8]) -> Option<Vec<RegistryError>> {
    if body.len() > MAX_ERROR_BODY_LEN {
        return None;
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let root: serde_json::Value = serde_json::from_slice(body).ok()?;
    let entries = match root.get("errors")? {
        serde_json::Value::Array(entries) => entries.iter().collect::<Vec<_>>(),
        single @ serde_json::Value::Object(_) => vec![single],
        _ => return None,
    };
    let errors: Vec<RegistryError> = entries
        .into_iter()
        .filter_map(|entry| {
            let entry = entry.as_object()?;
            let text = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            Some(RegistryError {
                code: ErrorCode::parse(text("code")),
                message: text("message").to_owned(),
                detail: entry.get("detail").filter(|d| !d.is_null()).cloned(),
            })
        })
        .take(MAX_ERRORS)
        .collect();
    (!errors.is_empty()).then_some(errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_known_code_parses_and_prints_back() {
        let all = [
            ErrorCode::BlobUnknown,
            ErrorCode::BlobUploadInvalid,
            ErrorCode::BlobUploadUnknown,
            ErrorCode::DigestInvalid,
            ErrorCode::ManifestBlobUnknown,
            ErrorCode::ManifestInvalid,
            ErrorCode::ManifestUnknown,
            ErrorCode::ManifestUnverified,
            ErrorCode::NameInvalid,
            ErrorCode::NameUnknown,
            ErrorCode::SizeInvalid,
            ErrorCode::TagInvalid,
            ErrorCode::Unauthorized,
            ErrorCode::Denied,
            ErrorCode::Unsupported,
            ErrorCode::TooManyRequests,
            ErrorCode::RangeInvalid,
            ErrorCode::PaginationNumberInvalid,
        ];
        for code in all {
            let text = code.as_str().to_owned();
            assert!(!text.is_empty() && text.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert_eq!(ErrorCode::parse(&text), code);
            assert_eq!(ErrorCode::parse(&text.to_ascii_lowercase()), code);
        }
        assert_eq!(
            ErrorCode::parse("NEW_THING"),
            ErrorCode::Unknown("NEW_THING".into())
        );
        assert_eq!(ErrorCode::parse("NEW_THING").as_str(), "NEW_THING");
        assert!(ErrorCode::TooManyRequests.is_retryable());
        assert!(!ErrorCode::ManifestUnknown.is_retryable());
        assert!(ErrorCode::ManifestUnknown.is_not_found());
        assert!(ErrorCode::Denied.is_auth());
    }

    #[test]
    fn error_bodies_table() {
        let e = |code: ErrorCode, message: &str, detail: Option<serde_json::Value>| RegistryError {
            code,
            message: message.to_owned(),
            detail,
        };
        let cases: Vec<(&[u8], Option<Vec<RegistryError>>)> = vec![
            (
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}"#,
                Some(vec![e(ErrorCode::ManifestUnknown, "manifest unknown", Some(serde_json::json!({"Tag": "nope"})))]),
            ),
            (
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":"repository","Name":"x","Action":"pull"}]},{"code":"DENIED"}]}"#,
                Some(vec![
                    e(ErrorCode::Unauthorized, "authentication required", Some(serde_json::json!([{"Type": "repository", "Name": "x", "Action": "pull"}]))),
                    e(ErrorCode::Denied, "", None),
                ]),
            ),
            (
                br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit.","extra":1}],"other":true}"#,
                Some(vec![e(ErrorCode::TooManyRequests, "You have reached your pull rate limit.", None)]),
            ),
            (br#"{"errors":[{"message":"no code","detail":null}]}"#, Some(vec![e(ErrorCode::Unknown(String::new()), "no code", None)])),
            (br#"{"errors":[{"code":"WEIRD","message":5}]}"#, Some(vec![e(ErrorCode::Unknown("WEIRD".into()), "", None)])),
            (br#"{"errors":[{"code":7}]}"#, Some(vec![e(ErrorCode::Unknown(String::new()), "", None)])),
            (br#"{"errors":{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}}"#, Some(vec![e(ErrorCode::NameUnknown, "repository name not known to registry", None)])),
            (b"\xef\xbb\xbf{\"errors\":[{\"code\":\"BLOB_UNKNOWN\"}]}\n", Some(vec![e(ErrorCode::BlobUnknown, "", None)])),
            (br#"{"errors":["not an object", {"code":"SIZE_INVALID"}]}"#, Some(vec![e(ErrorCode::SizeInvalid, "", None)])),
            (br#"{"errors":[]}"#, None),
            (br#"{"errors":["x", 1]}"#, None),
            (br#"{"errors":"x"}"#, None),
            (br#"{"message":"not a registry error"}"#, None),
            (br#"[{"code":"BLOB_UNKNOWN"}]"#, None),
            (b"<html><body>502 Bad Gateway</body></html>", None),
            (b"", None),
            (br#"{"errors":[{"code":"BLOB_UNKNOWN""#, None),
            (b"\xff\xfe", None),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse_error_body(body),
                expected,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn oversized_bodies_are_not_parsed_and_entries_are_capped() {
        let mut big = br#"{"errors":[{"code":"DENIED","message":""#.to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_ERROR_BODY_LEN));
        big.extend_from_slice(br#""}]}"#);
        assert_eq!(parse_error_body(&big), None);
        let many = format!(
            r#"{{"errors":[{}]}}"#,
            vec![r#"{"code":"DENIED"}"#; 1000].join(",")
        );
        assert_eq!(
            parse_error_body(many.as_bytes()).map(|e| e.len()),
            Some(MAX_ERRORS)
        );
    }

    #[test]
    fn display_escapes_control_characters_and_shortens() {
        let errors = parse_error_body(
            br#"{"errors":[{"code":"DENIED","message":"red \u001b[31m alert\nline","detail":"d"}]}"#,
        )
        .unwrap();
        let text = errors[0].to_string();
        assert_eq!(text, r#"DENIED: red \u{1b}[31m alert\nline ("d")"#);
        let long = RegistryError {
            code: ErrorCode::Unknown(String::new()),
            message: "m".repeat(2000),
            detail: None,
        };
        let text = long.to_string();
        assert!(
            text.starts_with("UNKNOWN: mmm") && text.ends_with('…') && text.chars().count() < 600,
            "{text}"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(errors) = parse_error_body(&body) {
                for e in errors {
                    let _ = e.to_string();
                }
            }
        }

        #[test]
        fn json_like_bodies_never_panic(body in r#"\{"errors":\[?\{?("(code|message|detail)":("[A-Z_\\]{0,10}"|[0-9]+|null|\[\]|\{\}),?){0,4}\}?\]?\}?"#) {
            let _ = parse_error_body(body.as_bytes());
        }
    }
}
