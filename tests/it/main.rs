//! CLI and end-to-end tests, in one binary so that they share one build.

mod golden;
mod hooks;
mod setup;
mod status;
mod support;
