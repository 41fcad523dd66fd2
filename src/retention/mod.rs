//! Retention: named policies that pin the log from their version on, and
//! the truncation of history that no policy pins.
//!
//! - `policy`: policy ids, the `PUT` body, the stored policy object, the set
//!   of policies and the checks on a `PUT` (pure).
//! - `truncate`: which batch objects a round may delete (pure).
//! - `worker`: the thread that owns the policies, answers
//!   `/v1/retention/` requests and runs truncation rounds (the IO shell).
//!
//! Invariants: with no policy nothing is deleted; only whole batch objects
//! whose every version is older than the smallest policy version are
//! deleted, oldest first, and the published oldest version moves before the
//! delete, so a reader that needs deleted history is told
//! `version_too_old`, never given a gap.

pub mod policy;
pub mod truncate;
pub mod worker;
