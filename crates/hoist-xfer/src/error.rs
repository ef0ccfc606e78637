//! Error types shared across the engine and helpers to walk and describe error chains.

use std::error::Error;
use std::sync::Arc;

/// An owned error from a descriptor or a store.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// An error shared by every watcher of a transfer.
pub type SharedError = Arc<dyn Error + Send + Sync + 'static>;

/// Converts an owned error into a shared one.
pub(crate) fn share(err: BoxError) -> SharedError {
    Arc::from(err)
}

/// One line describing `err` and its sources, `"outer: inner: root"`. A source whose message the
/// previous level already includes is skipped, so errors that print their cause are not repeated.
pub fn describe(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut last = text.clone();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !last.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        last = message;
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer {
        message: &'static str,
        source: Option<Box<Layer>>,
    }

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.message)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.source.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn describe_joins_the_chain_without_repeating_included_causes() {
        let err = Layer {
            message: "fetching blob",
            source: Some(Box::new(Layer {
                message: "io error: connection reset",
                source: Some(Box::new(Layer {
                    message: "connection reset",
                    source: None,
                })),
            })),
        };
        assert_eq!(describe(&err), "fetching blob: io error: connection reset");
    }
}
