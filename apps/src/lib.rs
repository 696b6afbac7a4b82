//! Shared pieces of the cnet apps: the demos and the echo services.

#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod demo;
pub mod deviceplugin;
pub mod doctor;
pub mod http;
pub mod lab;
pub mod mem_demo;
pub mod metrics;
pub mod quic;
pub mod run;
pub mod service;
pub mod txgen;
