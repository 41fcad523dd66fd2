//! The durable log: the batch object format, object names, the object-store
//! interface and its backends, the persistence state machine of stage 2, and
//! recovery.
//!
//! - `format`: encodes committed transactions into a batch object and
//!   verifies and decodes it back (pure).
//! - `names`: batch object names, which sort like versions.
//! - `store`: the `ObjectStore` trait (submit, completions on a channel),
//!   typed errors, and a blocking helper.
//! - `local`: the local-disk backend (files, IO thread pool).
//! - `s3`: the S3 backend (event-driven client, SigV4, pool, retries).
//! - `failing`: a wrapper that fails operations on purpose, for tests.
//! - `persister`: which batches to write, retry, and report durable (pure).
//! - `recovery`: the log's tail state at start.
//! - `chain`: why the log stays one chain with several batch writes in
//!   flight, and how readers skip a fenced leader's orphaned batches (pure).
//!
//! Invariants: nothing here decides versions (only the sequencer does); a
//! version is reported durable only after its batch and every earlier batch
//! of this leader were written; bytes read from storage are verified before
//! use and never panic a thread.

pub mod chain;
pub mod failing;
pub mod format;
pub mod local;
pub mod names;
pub mod persister;
pub mod recovery;
pub mod s3;
pub mod store;
