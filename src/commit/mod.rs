//! Commit path: parsing, conflict checking and sequencing.
pub mod conflict;
