//! Store tests: conditional writes (also under races), persistence across
//! reopen, damage detection, multipart completion.

use std::sync::{Arc, Barrier};

use super::*;

fn memory() -> Store {
    let store = Store::in_memory(5);
    store.create_bucket("b").unwrap();
    store
}

fn if_none_match() -> WriteCondition {
    WriteCondition { if_none_match_any: true, if_match: None }
}

fn if_match(etag: &str) -> WriteCondition {
    WriteCondition { if_none_match_any: false, if_match: Some(format!("\"{etag}\"")) }
}

#[test]
fn conditional_writes() {
    let store = memory();
    let first = store.put_object("b", "k", b"one".to_vec(), NewObject::default(), &if_none_match()).unwrap();
    assert_eq!(first.etag, checksum::md5_hex(b"one"));
    let refused = store.put_object("b", "k", b"two".to_vec(), NewObject::default(), &if_none_match());
    assert_eq!(refused.unwrap_err().code(), "PreconditionFailed");
    let wrong = store.put_object("b", "k", b"two".to_vec(), NewObject::default(), &if_match("0000"));
    assert_eq!(wrong.unwrap_err().code(), "PreconditionFailed");
    let missing = store.put_object("b", "other", b"x".to_vec(), NewObject::default(), &if_match(&first.etag));
    assert_eq!(missing.unwrap_err(), S3Error::NoSuchKey { key: "other".into() });
    store.put_object("b", "k", b"two".to_vec(), NewObject::default(), &if_match(&first.etag)).unwrap();
    let (meta, data) = store.get_object("b", "k", true).unwrap();
    assert_eq!((meta.size, data.unwrap().as_slice()), (3, &b"two"[..]));
    assert_eq!(
        store.put_object("nope", "k", vec![], NewObject::default(), &WriteCondition::default()).unwrap_err().code(),
        "NoSuchBucket"
    );
}

/// N threads race to create one key with If-None-Match: * (and then to
/// replace it with If-Match on the same ETag): exactly one wins each round.
fn race(store: &Arc<Store>, rounds: usize, writers: usize) {
    for round in 0..rounds {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(writers));
        let winners: Vec<bool> = (0..writers)
            .map(|writer| {
                let (store, barrier, key) = (store.clone(), barrier.clone(), key.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let data = format!("writer {writer}").into_bytes();
                    store.put_object("b", &key, data, NewObject::default(), &if_none_match()).is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect();
        assert_eq!(winners.iter().filter(|won| **won).count(), 1, "round {round}: {winners:?}");
        let winner = winners.iter().position(|won| *won).unwrap();
        let (meta, data) = store.get_object("b", &key, true).unwrap();
        assert_eq!(data.unwrap().as_slice(), format!("writer {winner}").as_bytes());

        let barrier = Arc::new(Barrier::new(writers));
        let replaced = (0..writers)
            .map(|writer| {
                let (store, barrier, key, etag) = (store.clone(), barrier.clone(), key.clone(), meta.etag.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let data = format!("replacement {writer}").into_bytes();
                    store.put_object("b", &key, data, NewObject::default(), &if_match(&etag)).is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|_| true)
            .map(|handle| handle.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(replaced, 1, "round {round}");
    }
}

#[test]
fn racing_conditional_writers_in_memory_exactly_one_wins() {
    race(&Arc::new(memory()), 50, 8);
}

#[test]
fn racing_conditional_writers_on_disk_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::on_disk(dir.path(), 5).unwrap();
    store.create_bucket("b").unwrap();
    race(&Arc::new(store), 20, 8);
}

#[test]
fn disk_store_survives_reopen_and_detects_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::on_disk(dir.path(), 5).unwrap();
        store.create_bucket("b").unwrap();
        store.create_bucket("empty").unwrap();
        let new = NewObject { content_type: Some("text/plain".into()), ..NewObject::default() };
        store.put_object("b", "a/ü b+c", b"hello".to_vec(), new, &WriteCondition::default()).unwrap();
        store.put_object("b", "gone", b"x".to_vec(), NewObject::default(), &WriteCondition::default()).unwrap();
        store.delete_object("b", "gone").unwrap();
        // A second store on the same directory is refused while this one lives.
        assert!(Store::on_disk(dir.path(), 5).is_err());
    }
    let store = Store::on_disk(dir.path(), 5).unwrap();
    assert_eq!(store.list_buckets().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["b", "empty"]);
    let (meta, data) = store.get_object("b", "a/ü b+c", true).unwrap();
    assert_eq!(data.unwrap().as_slice(), b"hello");
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(store.get_object("b", "gone", false).unwrap_err().code(), "NoSuchKey");

    // Flip a data byte on disk: the read is refused, not served.
    let objects = dir.path().join("buckets/b/objects");
    let file = std::fs::read_dir(&objects).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(store.get_object("b", "a/ü b+c", true).unwrap_err().code(), "InternalError");
}

#[test]
fn multipart_completion() {
    let store = memory();
    let id = store.create_upload("b", "big", NewObject::default()).unwrap();
    let md5_1 = store.upload_part(&id, "b", "big", 1, b"hello".to_vec(), None).unwrap();
    let md5_2 = store.upload_part(&id, "b", "big", 2, b" world".to_vec(), None).unwrap();
    let parts = vec![(1, format!("\"{}\"", hex::encode(md5_1))), (2, hex::encode(md5_2))];
    assert_eq!(
        store
            .complete_upload(&id, "b", "big", &[parts[1].clone(), parts[0].clone()], &WriteCondition::default())
            .unwrap_err(),
        S3Error::InvalidPartOrder
    );
    assert_eq!(
        store.complete_upload(&id, "b", "big", &[(1, "\"00\"".into())], &WriteCondition::default()).unwrap_err(),
        S3Error::InvalidPart
    );
    let meta = store.complete_upload(&id, "b", "big", &parts, &WriteCondition::default()).unwrap();
    assert_eq!(meta.etag, checksum::multipart_etag(&[md5_1, md5_2]));
    assert!(meta.etag.ends_with("-2"));
    assert_eq!(store.get_object("b", "big", true).unwrap().1.unwrap().as_slice(), b"hello world");
    assert_eq!(store.abort_upload(&id, "b", "big").unwrap_err(), S3Error::NoSuchUpload);

    let id = store.create_upload("b", "small", NewObject::default()).unwrap();
    let small = store.upload_part(&id, "b", "small", 1, b"abc".to_vec(), None).unwrap();
    let last = store.upload_part(&id, "b", "small", 2, b"d".to_vec(), None).unwrap();
    let parts = vec![(1, hex::encode(small)), (2, hex::encode(last))];
    assert_eq!(
        store.complete_upload(&id, "b", "small", &parts, &WriteCondition::default()).unwrap_err(),
        S3Error::EntityTooSmall
    );
    store.abort_upload(&id, "b", "small").unwrap();
}

#[test]
fn bucket_lifecycle() {
    let store = memory();
    assert_eq!(store.create_bucket("b").unwrap_err().code(), "BucketAlreadyOwnedByYou");
    store.put_object("b", "k", vec![1], NewObject::default(), &WriteCondition::default()).unwrap();
    assert_eq!(store.delete_bucket("b").unwrap_err().code(), "BucketNotEmpty");
    store.delete_object("b", "k").unwrap();
    store.delete_object("b", "k").unwrap();
    store.delete_bucket("b").unwrap();
    assert_eq!(store.delete_bucket("b").unwrap_err().code(), "NoSuchBucket");
}
