//! Content-addressed local store: OCI layout, resumable ingests, unpacked layers, SQLite metadata.
