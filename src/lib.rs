//! Stoat: a single-leader, optimistic-concurrency transaction log service.
//!
//! `server` owns connections (mio reactors, HTTP/1.1), `pipeline` the stages
//! a commit passes through, `commit` the decision logic, `retention` the
//! policies and history truncation, `ops` metrics, logging and platform
//! calls, `config` the validated settings.

pub mod commit;
pub mod config;
pub mod loadgen;
pub mod log;
pub mod ops;
pub mod pipeline;
pub mod random;
pub mod retention;
pub mod server;
pub mod subscribe;
