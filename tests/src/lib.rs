//! Helpers for integration tests against the Linux kernel in network namespaces.
