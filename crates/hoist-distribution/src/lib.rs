//! Pull, push, tags and copy of container images.

pub mod copy;
pub mod transport;
