//! Stoat: a single-leader, optimistic-concurrency transaction log service.
pub mod commit;
