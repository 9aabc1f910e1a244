//! CLI and end-to-end tests, in one binary so that they share one build.

mod atomic;
mod backup;
mod cli;
mod common;
mod golden;
mod hooks;
mod laws;
mod mcp;
mod model;
mod remote;
mod restore;
mod status;
