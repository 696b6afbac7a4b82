//! Zero-copy socket-like API over a cnet stack (filled by the socket-API work).
