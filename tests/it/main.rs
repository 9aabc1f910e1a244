//! CLI and end-to-end tests, in one binary so that they share one build.

mod atomic;
mod backup;
mod cli;
mod contention;
mod deletions;
mod golden;
mod hooks;
mod hostile;
mod idle;
mod laws;
mod model;
mod remote;
mod restore;
mod secrets;
mod setup;
mod status;
mod support;
mod sync;
