//! Commit path: parsing, conflict checking and sequencing.

pub mod parse;
pub mod transaction;
