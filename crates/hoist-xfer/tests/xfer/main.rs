//! Scenario tests of the transfer engine, driven by tokio's paused clock.
#![allow(clippy::unwrap_used, missing_docs)]

mod download;
mod properties;
mod retries;
mod support;
mod transfer_manager;
mod upload;
