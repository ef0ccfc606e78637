//! Exit codes: they tell scripts what kind of failure happened.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure |
//! | 2 | usage error (bad arguments, bad reference, bad configuration) |
//! | 3 | not found, or access denied |
//! | 4 | network or registry unavailable (a retry later may succeed) |
//! | 5 | corrupt data (digest or size mismatch) |

use hoist_registry::Error as RegistryError;

/// Any other failure.
pub const FAILURE: u8 = 1;
/// Usage error.
pub const USAGE: u8 = 2;
/// Not found or denied.
pub const NOT_FOUND_OR_DENIED: u8 = 3;
/// Network or registry unavailable.
pub const NETWORK: u8 = 4;
/// Corrupt data.
pub const CORRUPT: u8 = 5;

/// Something the user named is not there (in the local store, say).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The exit code for an error, from the first typed error in its chain.
pub fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<NotFound>().is_some() {
            return NOT_FOUND_OR_DENIED;
        }
        if let Some(e) = cause.downcast_ref::<hoist_distribution::Error>() {
            return distribution_code(e);
        }
        if let Some(e) = cause.downcast_ref::<RegistryError>() {
            return registry_code(e);
        }
        if cause
            .downcast_ref::<hoist_distribution::transport::NameError>()
            .is_some()
        {
            return USAGE;
        }
        if cause
            .downcast_ref::<hoist_registry::reference::ReferenceError>()
            .is_some()
        {
            return USAGE;
        }
    }
    FAILURE
}

fn distribution_code(e: &hoist_distribution::Error) -> u8 {
    use hoist_distribution::ErrorKind;
    if let Some(r) = e.registry_error() {
        return registry_code(r);
    }
    match e.kind() {
        ErrorKind::InvalidInput | ErrorKind::Unsupported => USAGE,
        ErrorKind::NotFoundOrDenied => NOT_FOUND_OR_DENIED,
        ErrorKind::Network => NETWORK,
        ErrorKind::Corrupt => CORRUPT,
        _ => FAILURE,
    }
}

fn registry_code(e: &RegistryError) -> u8 {
    match e {
        RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => CORRUPT,
        RegistryError::Reference(_) | RegistryError::Config { .. } => USAGE,
        _ if e.is_not_found() || e.is_denied() => NOT_FOUND_OR_DENIED,
        _ if e.is_retryable() => NETWORK,
        _ => FAILURE,
    }
}
