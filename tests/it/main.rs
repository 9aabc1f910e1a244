//! CLI and end-to-end tests, in one binary so that they share one build.

mod golden;
mod hostile;
mod remote;
mod support;
