//! Integration tests of the store: crash and resume across processes, several processes on one
//! store, fsck and gc on disk, and interoperability with skopeo and umoci.
#![allow(clippy::unwrap_used, missing_docs)]

mod child;
mod concurrent;
mod crash;
mod interop;
mod maintenance;
mod support;
