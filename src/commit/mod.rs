//! Commit path: parsing, conflict checking and sequencing.

pub mod conflict;
pub mod parse;
pub mod sequencer;
pub mod transaction;
