//! Names of log objects: `log/` then the batch's start version as 20 decimal
//! digits, then `.batch`.
//!
//! A batch covers the versions `prev_version + 1 ..= last_version`; its start
//! version is `prev_version + 1`, the first version it covers, whether or not
//! a transaction committed at it (versions of transactions that did not
//! commit are never logged, so a batch's first transaction may be later).
//!
//! Invariants: byte order of names is numeric order of start versions, so a
//! listing of `log/` is the log in order; and a name depends only on the
//! version the batch continues from, so any two writers extending the log
//! from the same version collide on put-if-absent, whatever versions their
//! transactions got (that collision is the fencing mechanism).

/// The prefix every batch object name starts with.
pub const LOG_PREFIX: &str = "log/";
const SUFFIX: &str = ".batch";
const DIGITS: usize = 20;

/// The object name of the batch whose start version (`prev_version + 1`) is
/// `start_version`.
pub fn batch_name(start_version: u64) -> String {
    format!("{LOG_PREFIX}{start_version:020}{SUFFIX}")
}

/// The start version a batch name stands for; `None` for any other name.
pub fn parse_batch_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(LOG_PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.len() != DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_versions_and_parse_back() {
        let versions = [0u64, 1, 9, 10, 42, 999, 1_000_000, u64::MAX];
        let names: Vec<String> = versions.iter().map(|v| batch_name(*v)).collect();
        assert_eq!(names[4], "log/00000000000000000042.batch");
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]));
        for (version, name) in versions.iter().zip(&names) {
            assert_eq!(parse_batch_name(name), Some(*version));
        }
        for other in [
            "log/42.batch",
            "log/0000000000000000004x.batch",
            "log/99999999999999999999.batch",
            "x/00000000000000000042.batch",
        ] {
            assert_eq!(parse_batch_name(other), None, "{other}");
        }
    }
}
