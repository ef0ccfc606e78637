//! Test-only support: real-registry harness, token server, fault-injecting proxy.
