//! Copies through every transport, against real registries and with skopeo as the other side.
#![allow(clippy::unwrap_used, missing_docs)]

mod chunks;
mod errors;
mod interop;
mod platforms;
mod put_blob;
mod recompress;
mod retries;
mod reuse;
mod round_trips;
mod support;
