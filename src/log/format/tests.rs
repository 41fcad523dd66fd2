//! Tests of the batch format: round trips, and that every damage is caught.

use proptest::prelude::*;

use super::*;
use crate::commit::transaction::{LoggedTransaction, Operation};

fn encode(leader_id: &str, prev_version: u64, transactions: &[LoggedTransaction]) -> EncodedBatch {
    let mut encoder = BatchEncoder::new(leader_id, prev_version);
    for transaction in transactions {
        let operations = transaction.operations.iter().map(Operation::as_ref);
        encoder.push(transaction.version, &transaction.request_id, transaction.timestamp_ms, operations);
    }
    encoder.finish()
}

fn small_batch() -> Vec<u8> {
    let transactions = vec![
        LoggedTransaction {
            version: 7,
            request_id: "a".into(),
            timestamp_ms: 1,
            operations: vec![Operation::Write { key: b"k".to_vec(), value: b"v".to_vec() }],
        },
        LoggedTransaction {
            version: 9,
            request_id: "b-2".into(),
            timestamp_ms: 2,
            operations: vec![
                Operation::Delete { key: b"d".to_vec() },
                Operation::RangeDelete { begin: b"a".to_vec(), end: b"b".to_vec() },
            ],
        },
        LoggedTransaction { version: 12, request_id: "c".into(), timestamp_ms: 3, operations: vec![] },
    ];
    encode("leader", 5, &transactions).bytes.to_vec()
}

/// Replaces the checksum so that a test reaches the checks behind it.
fn reseal(bytes: &mut [u8]) {
    let body_len = bytes.len() - CHECKSUM_BYTES;
    let checksum = crc32c::crc32c(&bytes[..body_len]);
    bytes[body_len..].copy_from_slice(&checksum.to_le_bytes());
}

#[test]
fn small_batch_round_trips_with_header_fields() {
    let bytes = small_batch();
    let decoded = decode_batch(&bytes).unwrap();
    assert_eq!(decoded.leader_id, "leader");
    assert_eq!((decoded.first_version, decoded.last_version, decoded.prev_version), (7, 12, 5));
    let versions: Vec<u64> = decoded.transactions.iter().map(|t| t.version).collect();
    assert_eq!(versions, [7, 9, 12]);
    let view = BatchView::parse(&bytes).unwrap();
    let second = view.transactions().nth(1).unwrap();
    assert_eq!(second.request_id, "b-2");
    assert_eq!(second.operations().count(), 2);
}

#[test]
fn the_versions_are_read_from_the_first_bytes_alone() {
    let bytes = small_batch();
    let prefix = &bytes[..VERSIONS_PREFIX_BYTES as usize];
    let expected = BatchVersions { first_version: 7, last_version: 12, prev_version: 5 };
    assert_eq!(BatchVersions::peek(prefix), Ok(expected));
    for length in 0..prefix.len() {
        assert!(BatchVersions::peek(&prefix[..length]).is_err(), "{length} bytes");
    }
    let mut bad_magic = prefix.to_vec();
    bad_magic[0] ^= 1;
    assert_eq!(BatchVersions::peek(&bad_magic), Err(FormatError::BadMagic));
    let mut disordered = prefix.to_vec();
    disordered[32..40].copy_from_slice(&12u64.to_le_bytes());
    assert!(BatchVersions::peek(&disordered).is_err(), "prev_version must be below first_version");
}

#[test]
fn every_truncation_is_detected() {
    let bytes = small_batch();
    for length in 0..bytes.len() {
        assert!(BatchView::parse(&bytes[..length]).is_err(), "truncated to {length}");
    }
}

#[test]
fn every_flipped_bit_and_byte_is_detected() {
    let bytes = small_batch();
    for index in 0..bytes.len() {
        for mask in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[index] ^= mask;
            assert!(BatchView::parse(&damaged).is_err(), "byte {index} xor {mask:#x}");
        }
    }
}

#[test]
fn structural_damage_behind_a_valid_checksum_is_detected() {
    let bytes = small_batch();
    let cases: [(usize, u8, &str); 5] = [
        (0, b'X', "magic"),
        (8, 2, "format version"),
        (12, 4, "transaction count"),
        (16, 8, "first version"),
        (32, 7, "prev version equal to first"),
    ];
    for (offset, value, what) in cases {
        let mut damaged = bytes.clone();
        damaged[offset] = value;
        reseal(&mut damaged);
        assert!(BatchView::parse(&damaged).is_err(), "{what}");
    }
    let mut trailing = bytes[..bytes.len() - CHECKSUM_BYTES].to_vec();
    trailing.extend_from_slice(&[0, 0, 0, 0, 0]);
    reseal(&mut trailing);
    assert!(BatchView::parse(&trailing).is_err(), "trailing bytes");
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..12);
    prop_oneof![
        (bytes(), bytes()).prop_map(|(key, value)| Operation::Write { key, value }),
        bytes().prop_map(|key| Operation::Delete { key }),
        (bytes(), bytes()).prop_filter_map("begin < end", |(a, b)| match a.cmp(&b) {
            std::cmp::Ordering::Less => Some(Operation::RangeDelete { begin: a, end: b }),
            std::cmp::Ordering::Greater => Some(Operation::RangeDelete { begin: b, end: a }),
            std::cmp::Ordering::Equal => None,
        }),
    ]
}

fn transactions_strategy() -> impl Strategy<Value = (u64, Vec<LoggedTransaction>)> {
    let transaction =
        (1u64..1000, "[A-Za-z0-9._:-]{1,128}", any::<u64>(), proptest::collection::vec(operation_strategy(), 0..6));
    (0u64..1 << 40, proptest::collection::vec(transaction, 1..8)).prop_map(|(prev_version, parts)| {
        let mut version = prev_version;
        let transactions = parts
            .into_iter()
            .map(|(gap, request_id, timestamp_ms, operations)| {
                version += gap;
                LoggedTransaction { version, request_id, timestamp_ms, operations }
            })
            .collect();
        (prev_version, transactions)
    })
}

proptest! {
    #[test]
    fn random_batches_round_trip((prev_version, transactions) in transactions_strategy(), leader_id in "[a-z0-9-]{0,40}") {
        let batch = encode(&leader_id, prev_version, &transactions);
        prop_assert_eq!(batch.first_version, transactions[0].version);
        prop_assert_eq!(batch.last_version, transactions.last().unwrap().version);
        let decoded = decode_batch(&batch.bytes).unwrap();
        prop_assert_eq!(&decoded.leader_id, &leader_id);
        prop_assert_eq!(decoded.prev_version, prev_version);
        prop_assert_eq!(decoded.transactions, transactions);
    }

    /// Arbitrary damage behind a valid checksum never panics the decoder.
    #[test]
    fn resealed_garbage_never_panics(
        (prev_version, transactions) in transactions_strategy(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = encode("l", prev_version, &transactions).bytes.to_vec();
        for (index, value) in edits {
            let at = index.index(bytes.len() - CHECKSUM_BYTES);
            bytes[at] = value;
        }
        reseal(&mut bytes);
        if let Ok(batch) = decode_batch(&bytes) {
            prop_assert!(batch.first_version > batch.prev_version);
            prop_assert!(batch.transactions.windows(2).all(|pair| pair[0].version < pair[1].version));
        }
    }
}
