//! Shared pieces of the cnet apps.
