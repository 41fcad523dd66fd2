//! Operations: metrics, logging, and platform calls (signals, limits).

pub mod logging;
pub mod metrics;
pub mod sys;
