//! Client for the registry HTTP API v2 / OCI distribution spec.
