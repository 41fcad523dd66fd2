//! Retention policies, pure: policy ids, the `PUT` body, the stored policy
//! object, and the set of policies with the decisions made on it.
//!
//! Invariants:
//! - nothing here does IO or reads a clock (`updated_at_ms` is passed in);
//! - every input a client sends (path segment, body) is parsed into a typed
//!   value or a precise error message, never a panic;
//! - a stored policy is verified (magic, checksum, its name) before use.

use std::collections::BTreeMap;

use simd_json::borrowed::Value;
use simd_json::StaticNode;

use crate::commit::parse::type_name;

/// Every policy object's name starts with this.
pub const POLICY_PREFIX: &str = "retention/";
/// A policy object is `retention/policy-<policy_id>`: the fixed part keeps
/// ids such as `.` or `..` valid object names.
const POLICY_NAME_PREFIX: &str = "retention/policy-";
/// Longest policy id, in bytes (the same rule as request ids).
pub const POLICY_ID_BYTES_MAX: usize = 128;
/// The largest `PUT` body looked at; a body of `{"version": N}` is tiny.
pub const PUT_BODY_BYTES_MAX: usize = 4096;

const MAGIC: [u8; 8] = *b"STOATPOL";
const FORMAT_VERSION: u32 = 1;
const FIXED_BYTES: usize = 8 + 4 + 8 + 8 + 1;
const CHECKSUM_BYTES: usize = 4;

/// One named policy: every transaction with `version >= self.version` is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub policy_id: String,
    pub version: u64,
    /// When it was created or last moved (Unix epoch milliseconds).
    pub updated_at_ms: u64,
}

/// A policy id from a path segment: percent-decoded, then 1-128 bytes of
/// `[A-Za-z0-9._:-]`.
pub fn parse_policy_id(segment: &str) -> Result<String, String> {
    let decoded = percent_decode(segment.as_bytes())
        .ok_or_else(|| "policy_id: invalid percent-encoding in the path".to_string())?;
    if decoded.is_empty() || decoded.len() > POLICY_ID_BYTES_MAX {
        return Err(format!("policy_id: must be 1 to {POLICY_ID_BYTES_MAX} characters, got {}", decoded.len()));
    }
    if let Some(&bad) = decoded.iter().find(|&&byte| !is_id_byte(byte)) {
        let shown = if bad.is_ascii_graphic() { format!("{:?}", bad as char) } else { format!("byte 0x{bad:02x}") };
        return Err(format!("policy_id: {shown} is not allowed; use only [A-Za-z0-9._:-]"));
    }
    // Only ASCII bytes remain, so this is valid UTF-8.
    String::from_utf8(decoded).map_err(|_| "policy_id: not UTF-8".to_string())
}

fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"._:-".contains(&byte)
}

fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(text, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Some(decoded)
}

/// The version of a `PUT` body `{"version": V}`; any other field, a wrong
/// type or malformed JSON is an error naming what is wrong.
pub fn parse_put_body(body: &[u8]) -> Result<u64, String> {
    if body.is_empty() {
        return Err("body: expected a JSON object {\"version\": V}, got an empty body".into());
    }
    if body.len() > PUT_BODY_BYTES_MAX {
        return Err(format!("body: {} bytes is more than the {PUT_BODY_BYTES_MAX} a policy takes", body.len()));
    }
    let mut copy = body.to_vec();
    let value = simd_json::to_borrowed_value(&mut copy).map_err(|error| format!("body: invalid JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err(format!("body: expected a JSON object, got {}", type_name(&value)));
    };
    let mut version = None;
    for (key, value) in object.iter() {
        if key != "version" {
            return Err(format!("{}: unknown field; a policy has only \"version\"", json_key(key)));
        }
        version = Some(match value {
            Value::Static(StaticNode::U64(n)) => *n,
            Value::Static(StaticNode::I64(n)) if *n >= 0 => *n as u64,
            other => return Err(format!("version: expected an unsigned 64-bit integer, got {}", type_name(other))),
        });
    }
    version.ok_or_else(|| "version: required".to_string())
}

fn json_key(key: &str) -> String {
    let shown: String = key.chars().take(64).collect();
    format!("{shown:?}")
}

/// The object name of a policy.
pub fn object_name(policy_id: &str) -> String {
    format!("{POLICY_NAME_PREFIX}{policy_id}")
}

/// The policy id an object name stands for; `None` for any other name.
pub fn policy_id_of(name: &str) -> Option<&str> {
    let id = name.strip_prefix(POLICY_NAME_PREFIX)?;
    let valid = (1..=POLICY_ID_BYTES_MAX).contains(&id.len()) && id.bytes().all(is_id_byte);
    valid.then_some(id)
}

/// Why a stored policy object cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyFormatError {
    #[error("policy object {name}: {problem}")]
    Invalid { name: String, problem: &'static str },
}

/// The bytes of a policy object: magic `STOATPOL`, format version (u32),
/// version (u64), updated_at_ms (u64), id length (u8), id, crc32c of every
/// byte before it; integers little-endian.
pub fn encode(policy: &Policy) -> Vec<u8> {
    debug_assert!(policy_id_of(&object_name(&policy.policy_id)).is_some(), "policy ids are validated first");
    let id = policy.policy_id.as_bytes();
    let mut bytes = Vec::with_capacity(FIXED_BYTES + id.len() + CHECKSUM_BYTES);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&policy.version.to_le_bytes());
    bytes.extend_from_slice(&policy.updated_at_ms.to_le_bytes());
    bytes.push(id.len() as u8);
    bytes.extend_from_slice(id);
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

/// Verifies and decodes a policy object read under `name`.
pub fn decode(name: &str, bytes: &[u8]) -> Result<Policy, PolicyFormatError> {
    let invalid = |problem| PolicyFormatError::Invalid { name: name.to_owned(), problem };
    if bytes.len() < FIXED_BYTES + CHECKSUM_BYTES {
        return Err(invalid("too short"));
    }
    let (body, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if crc32c::crc32c(body) != stored {
        return Err(invalid("checksum mismatch"));
    }
    if body[..8] != MAGIC {
        return Err(invalid("bad magic"));
    }
    let u32_at = |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&body[at..at + 8]);
        u64::from_le_bytes(word)
    };
    if u32_at(8) != FORMAT_VERSION {
        return Err(invalid("unknown format version"));
    }
    let (version, updated_at_ms) = (u64_at(12), u64_at(20));
    let id_len = usize::from(body[28]);
    if body.len() != FIXED_BYTES + id_len {
        return Err(invalid("id length does not match the object"));
    }
    let id = std::str::from_utf8(&body[FIXED_BYTES..]).map_err(|_| invalid("id is not UTF-8"))?;
    if policy_id_of(name) != Some(id) {
        return Err(invalid("the id inside does not match the name"));
    }
    Ok(Policy { policy_id: id.to_owned(), version, updated_at_ms })
}

/// Why a `PUT` is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutRefused {
    /// The version is newer than the newest committed version.
    InTheFuture { version: u64, committed_version: u64 },
    /// The version (or history after it) is already deleted.
    AlreadyDeleted { version: u64, oldest_version: u64 },
    /// A new policy would pass `retention.policies_max`.
    TooManyPolicies { max: usize },
}

/// Every policy, by id.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    by_id: BTreeMap<String, Policy>,
    max: usize,
}

impl Policies {
    pub fn new(max: usize) -> Self {
        Policies { by_id: BTreeMap::new(), max }
    }

    /// Whether a policy `policy_id` may be set at `version`. `oldest_version`
    /// is the published oldest version: versions up to it are deleted (when
    /// it is above 0), so a policy must pin a version after it.
    pub fn check_put(
        &self,
        policy_id: &str,
        version: u64,
        committed_version: u64,
        oldest_version: u64,
    ) -> Result<(), PutRefused> {
        if version > committed_version {
            return Err(PutRefused::InTheFuture { version, committed_version });
        }
        if oldest_version > 0 && version <= oldest_version {
            return Err(PutRefused::AlreadyDeleted { version, oldest_version });
        }
        if !self.by_id.contains_key(policy_id) && self.by_id.len() >= self.max {
            return Err(PutRefused::TooManyPolicies { max: self.max });
        }
        Ok(())
    }

    /// Adds or replaces a policy (already durable).
    pub fn insert(&mut self, policy: Policy) {
        self.by_id.insert(policy.policy_id.clone(), policy);
    }

    pub fn remove(&mut self, policy_id: &str) -> Option<Policy> {
        self.by_id.remove(policy_id)
    }

    pub fn get(&self, policy_id: &str) -> Option<&Policy> {
        self.by_id.get(policy_id)
    }

    /// Policies in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The smallest policy version: history before it may be deleted.
    /// `None` with no policy: nothing may be deleted.
    pub fn min_version(&self) -> Option<u64> {
        self.by_id.values().map(|policy| policy.version).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_ids_follow_the_request_id_rule_after_percent_decoding() {
        assert_eq!(parse_policy_id("backup-1.a_b:c").unwrap(), "backup-1.a_b:c");
        assert_eq!(parse_policy_id("a%3Ab").unwrap(), "a:b");
        assert_eq!(parse_policy_id("..").unwrap(), "..");
        assert_eq!(parse_policy_id(&"x".repeat(128)).unwrap().len(), 128);
        for bad in ["", "a/b", "a b", "a%2Fb", "%zz", "%4", "caf%C3%A9", "a?b"] {
            assert!(parse_policy_id(bad).is_err(), "{bad}");
        }
        let long = parse_policy_id(&"x".repeat(129)).unwrap_err();
        assert!(long.starts_with("policy_id: must be 1 to 128"), "{long}");
        let slash = parse_policy_id("a/b").unwrap_err();
        assert_eq!(slash, "policy_id: '/' is not allowed; use only [A-Za-z0-9._:-]");
    }

    #[test]
    fn put_bodies_are_parsed_or_refused_precisely() {
        assert_eq!(parse_put_body(br#"{"version": 42}"#), Ok(42));
        assert_eq!(parse_put_body(br#"{"version":18446744073709551615}"#), Ok(u64::MAX));
        let cases: [(&[u8], &str); 9] = [
            (b"", "body: expected a JSON object {\"version\": V}, got an empty body"),
            (b"[1]", "body: expected a JSON object, got an array"),
            (b"{}", "version: required"),
            (br#"{"version": "5"}"#, "version: expected an unsigned 64-bit integer, got a string"),
            (br#"{"version": -1}"#, "version: expected an unsigned 64-bit integer, got the number -1"),
            (br#"{"version": 1.5}"#, "version: expected an unsigned 64-bit integer, got the number 1.5"),
            (br#"{"version": null}"#, "version: expected an unsigned 64-bit integer, got null"),
            (br#"{"version": 1, "extra": 2}"#, "\"extra\": unknown field; a policy has only \"version\""),
            (br#"{"version": 1"#, "body: invalid JSON"),
        ];
        for (body, expected) in cases {
            let error = parse_put_body(body).unwrap_err();
            assert!(error.starts_with(expected), "{}: {error}", String::from_utf8_lossy(body));
        }
        assert!(parse_put_body(&vec![b' '; PUT_BODY_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn policy_objects_round_trip_and_damage_is_detected() {
        let policy = Policy { policy_id: "backup".into(), version: 77, updated_at_ms: 1_800_000_000_000 };
        let name = object_name("backup");
        assert_eq!(name, "retention/policy-backup");
        assert_eq!(policy_id_of(&name), Some("backup"));
        assert_eq!(policy_id_of("retention/other"), None);
        let bytes = encode(&policy);
        assert_eq!(decode(&name, &bytes), Ok(policy.clone()));
        assert!(decode(&object_name("other"), &bytes).is_err(), "the name must match the id inside");
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            assert!(decode(&name, &damaged).is_err(), "a flipped byte at {index} is detected");
        }
        for length in 0..bytes.len() {
            assert!(decode(&name, &bytes[..length]).is_err());
        }
    }

    #[test]
    fn puts_are_checked_against_the_log_and_the_limit() {
        let mut policies = Policies::new(2);
        assert_eq!(policies.min_version(), None);
        assert_eq!(policies.check_put("a", 0, 10, 0), Ok(()), "with nothing deleted, 0 pins everything");
        assert_eq!(
            policies.check_put("a", 11, 10, 0),
            Err(PutRefused::InTheFuture { version: 11, committed_version: 10 })
        );
        assert_eq!(
            policies.check_put("a", 4, 10, 4),
            Err(PutRefused::AlreadyDeleted { version: 4, oldest_version: 4 })
        );
        assert_eq!(policies.check_put("a", 5, 10, 4), Ok(()));
        policies.insert(Policy { policy_id: "a".into(), version: 7, updated_at_ms: 0 });
        policies.insert(Policy { policy_id: "b".into(), version: 5, updated_at_ms: 0 });
        assert_eq!(policies.min_version(), Some(5));
        assert_eq!(policies.check_put("c", 9, 10, 4), Err(PutRefused::TooManyPolicies { max: 2 }));
        assert_eq!(policies.check_put("a", 9, 10, 4), Ok(()), "moving an existing policy is not a new one");
        policies.remove("b");
        assert_eq!(policies.min_version(), Some(7));
        assert_eq!(policies.iter().map(|p| p.policy_id.as_str()).collect::<Vec<_>>(), ["a"]);
    }
}
