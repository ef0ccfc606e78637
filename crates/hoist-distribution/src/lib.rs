//! Pull, push, tags and copy of container images.
