//! The error type of the test-support crate.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting or driving a test service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry binary is not installed.
    #[error(
        "{path} is missing: install the CNCF distribution registry with `apt-get install docker-registry`"
    )]
    RegistryBinaryMissing {
        /// Where the binary was looked for.
        path: PathBuf,
    },
    /// The registry process exited before it answered `GET /v2/`.
    #[error("the registry exited during start-up ({status}); last lines of {log}:\n{tail}")]
    RegistryExited {
        /// The exit status, as the OS reported it.
        status: String,
        /// The registry's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// The registry did not answer `GET /v2/` in time.
    #[error(
        "the registry at {url} did not answer GET /v2/ within {timeout:?}; last lines of {log}:\n{tail}"
    )]
    RegistryTimeout {
        /// The URL that was probed.
        url: String,
        /// How long the harness waited.
        timeout: Duration,
        /// The registry's log file.
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The token signing key or its certificate could not be made.
    #[error("could not create the token signing key or certificate: {0}")]
    Certificate(String),
    /// The htpasswd entry could not be made.
    #[error("could not hash the htpasswd password: {0}")]
    Htpasswd(String),
    /// A URL given to the harness is not a plain `http://host:port` URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
