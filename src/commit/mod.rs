//! Commit path: parsing, conflict checking and sequencing.
