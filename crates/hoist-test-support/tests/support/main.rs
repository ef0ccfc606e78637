//! Integration tests of the test-support crate against the real registry.
#![allow(clippy::unwrap_used, missing_docs)]

mod auth;
mod client;
mod content;
mod proxy;
mod registry;
