//! Shared pieces of the cnet apps: the demos and the echo services.

#![deny(missing_docs)]

pub mod demo;
pub mod http;
pub mod lab;
pub mod mem_demo;
pub mod service;
pub mod txgen;
