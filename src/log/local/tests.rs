//! Tests of the local-disk store through its `ObjectStore` interface.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;
use crate::log::store::Blocking;

/// A store whose journal is checkpointed only when full, idle for an hour,
/// or closed: objects stay marked for the tests that look at them.
fn open(directory: &Path) -> LocalStore {
    open_with(directory, true)
}

/// Like `open`; `unnamed_files: false` writes new objects under temporary
/// names, as on a filesystem without `O_TMPFILE`.
fn open_with(directory: &Path, unnamed_files: bool) -> LocalStore {
    let options = LocalStoreOptions {
        journal_checkpoint_age: Duration::from_secs(3600),
        unnamed_files,
        ..LocalStoreOptions::default()
    };
    LocalStore::open(directory, options).unwrap()
}

/// Both ways of writing a new object, each where this filesystem has it.
fn both_ways_of_writing(directory: &Path) -> Vec<LocalStore> {
    let with_names = open_with(directory, false);
    assert!(!with_names.disk.unnamed_files);
    let unnamed = open_with(directory, true);
    if !unnamed.disk.unnamed_files {
        eprintln!("no unnamed files on this filesystem: only temporary names are tested");
        return vec![with_names];
    }
    vec![with_names, unnamed]
}

#[test]
fn put_if_absent_then_get_and_ranges() {
    let root = tempfile::tempdir().unwrap();
    for (index, store) in both_ways_of_writing(root.path()).iter().enumerate() {
        put_if_absent_then_get_and_ranges_with(store, &format!("{index}/"));
    }
    let leftovers = fs::read_dir(root.path().join(TEMP_DIRECTORY)).unwrap().count();
    assert_eq!(leftovers, 0, "temporary files are removed");
}

fn put_if_absent_then_get_and_ranges_with(store: &LocalStore, prefix: &str) {
    let blocking = Blocking::new(store);
    blocking.put_if_absent(&format!("{prefix}log/a"), b"0123456789".to_vec()).unwrap();
    assert_eq!(blocking.get(&format!("{prefix}log/a"), None).unwrap(), b"0123456789");
    assert_eq!(blocking.get(&format!("{prefix}log/a"), Some(2..5)).unwrap(), b"234");
    assert_eq!(blocking.get(&format!("{prefix}log/a"), Some(8..100)).unwrap(), b"89");
    assert_eq!(blocking.get(&format!("{prefix}log/a"), Some(20..30)).unwrap(), b"");
    let (start, end) = (5, 2);
    assert_eq!(blocking.get(&format!("{prefix}log/a"), Some(start..end)).unwrap(), b"", "a reversed range");
    assert!(matches!(
        blocking.put_if_absent(&format!("{prefix}log/a"), b"other".to_vec()),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(blocking.get(&format!("{prefix}log/a"), None).unwrap(), b"0123456789", "the loser changes nothing");
    assert!(matches!(blocking.get(&format!("{prefix}log/b"), None), Err(StoreError::NotFound { .. })));
    assert!(
        matches!(blocking.get(&format!("{prefix}log"), None), Err(StoreError::NotFound { .. })),
        "a directory is not an object"
    );
    assert!(matches!(blocking.put_if_absent("../escape", vec![]), Err(StoreError::Permanent { .. })));
    assert!(
        matches!(blocking.put_if_absent(&format!("{prefix}log"), vec![]), Err(StoreError::Permanent { .. })),
        "a directory of objects"
    );
    assert!(
        matches!(blocking.put_if_absent(&format!("{prefix}log/a/b"), vec![]), Err(StoreError::Permanent { .. })),
        "under an object"
    );
}

#[test]
fn get_many_answers_every_name_in_order() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    let names: Vec<String> = (0..40).map(|index| format!("log/{index:03}")).collect();
    for (index, name) in names.iter().enumerate().filter(|(index, _)| index % 3 != 0) {
        blocking.put_if_absent(name, format!("object {index:03}").into_bytes()).unwrap();
    }
    let answers = blocking.get_many(&names, Some(7..10));
    assert_eq!(answers.len(), names.len());
    for (index, answer) in answers.iter().enumerate() {
        match answer {
            Ok(bytes) => assert_eq!(bytes, format!("{index:03}").as_bytes(), "{index}"),
            Err(StoreError::NotFound { .. }) => assert_eq!(index % 3, 0, "{index}"),
            Err(error) => panic!("{index}: {error}"),
        }
    }
    assert!(blocking.get_many(&[], None).is_empty());
}

#[test]
fn put_creates_or_replaces_whole_objects_and_listings_report_sizes() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    blocking.put("retention/policy-a", b"first".to_vec()).unwrap();
    blocking.put("retention/policy-a", b"second, longer".to_vec()).unwrap();
    assert_eq!(blocking.get("retention/policy-a", None).unwrap(), b"second, longer");
    blocking.put_if_absent("retention/policy-b", b"12".to_vec()).unwrap();
    let page = blocking.list("retention/", None, 10).unwrap();
    assert_eq!(page.names, ["retention/policy-a", "retention/policy-b"]);
    assert_eq!(page.sizes, [14, 2]);
    let sized = blocking.list_all_sized("retention/", None, 1).unwrap();
    assert_eq!(sized, [("retention/policy-a".to_string(), 14), ("retention/policy-b".to_string(), 2)]);
    assert!(matches!(blocking.put("retention", vec![]), Err(StoreError::Permanent { .. })), "a directory");
    assert!(matches!(blocking.put("a/.hidden", vec![]), Err(StoreError::Permanent { .. })));
    let temp_files = std::fs::read_dir(directory.path().join(".tmp")).unwrap().count();
    assert_eq!(temp_files, 0, "no temporary file is left behind");
}

#[test]
fn racing_puts_of_one_name_have_one_winner_across_instances() {
    let directory = tempfile::tempdir().unwrap();
    // One writes under temporary names, the other unnamed files (where the
    // filesystem has them): the link is the fence either way.
    let stores = [Arc::new(open_with(directory.path(), false)), Arc::new(open(directory.path()))];
    for round in 0..20 {
        let name = format!("race/{round:03}");
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let (store, barrier, name) = (Arc::clone(&stores[index % 2]), Arc::clone(&barrier), name.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Blocking::new(store.as_ref()).put_if_absent(&name, vec![index as u8; 4096]).map(|()| index)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|handle| handle.join().unwrap()).collect();
        let winners: Vec<usize> = results.iter().filter_map(|result| result.as_ref().ok().copied()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|result| matches!(result, Ok(_) | Err(StoreError::AlreadyExists { .. }))));
        let stored = Blocking::new(stores[0].as_ref()).get(&name, None).unwrap();
        assert_eq!(stored, vec![winners[0] as u8; 4096]);
    }
    let leftovers = fs::read_dir(directory.path().join(TEMP_DIRECTORY)).unwrap().count();
    assert_eq!(leftovers, 0, "temporary files are removed");
}

#[test]
fn listing_is_in_byte_order_across_directories_with_paging() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    // '-' (0x2d) sorts before '/' (0x2f), so "a-c" comes before "a/…".
    let mut names = vec![
        "a/b",
        "a-c",
        "a/c/d",
        "a/c0",
        "b",
        "ab",
        "a/b0/x",
        "log/00000000000000000002.batch",
        "log/00000000000000000010.batch",
    ];
    for name in &names {
        blocking.put_if_absent(name, name.as_bytes().to_vec()).unwrap();
    }
    fs::write(directory.path().join(".tmp").join("torn"), b"partial").unwrap();
    fs::write(directory.path().join("log").join(".hidden"), b"x").unwrap();
    names.sort_unstable();
    assert_eq!(blocking.list_all("", None, 1000).unwrap(), names);
    for page_size in 1..5 {
        assert_eq!(blocking.list_all("", None, page_size).unwrap(), names, "page size {page_size}");
    }
    assert_eq!(blocking.list_all("a/", None, 2).unwrap(), ["a/b", "a/b0/x", "a/c/d", "a/c0"]);
    assert_eq!(blocking.list_all("a/c", None, 2).unwrap(), ["a/c/d", "a/c0"]);
    assert_eq!(blocking.list_all("", Some("a/b0/x"), 2).unwrap(), ["a/c/d", "a/c0", "ab", "b", names[7], names[8]]);
    assert_eq!(blocking.list_all("", Some("a/b0"), 100).unwrap()[0], "a/b0/x");
    let page = blocking.list("log/", None, 1).unwrap();
    assert_eq!((page.names, page.truncated), (vec![names[7].to_owned()], true));
    let page = blocking.list("log/", Some(names[7]), 1).unwrap();
    assert_eq!((page.names, page.truncated), (vec![names[8].to_owned()], false));
    assert!(blocking.list("zzz", None, 10).unwrap().names.is_empty());
}

#[test]
fn delete_removes_a_batch_and_ignores_missing_names() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    for name in ["x/1", "x/2", "x/3"] {
        blocking.put_if_absent(name, vec![1]).unwrap();
    }
    blocking.delete(vec!["x/1".into(), "x/3".into(), "x/missing".into()]).unwrap();
    assert_eq!(blocking.list_all("x/", None, 10).unwrap(), ["x/2"]);
    blocking.put_if_absent("x/1", vec![2]).unwrap();
    assert_eq!(blocking.get("x/1", None).unwrap(), [2]);
}

#[test]
fn many_operations_in_flight_from_one_thread() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let (reply, completions) = crossbeam_channel::unbounded();
    for op_id in 0..100u64 {
        let op = ObjectOp::PutIfAbsent { name: format!("n/{op_id:03}"), bytes: Arc::new(vec![op_id as u8]) };
        store.submit(op_id, op, &reply);
    }
    let mut seen: Vec<OpId> = (0..100)
        .map(|_| completions.recv().unwrap())
        .map(|completion| {
            assert_eq!(completion.result, Ok(OpOutput::Created));
            completion.op_id
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_full_queue_answers_transient() {
    let directory = tempfile::tempdir().unwrap();
    let options = LocalStoreOptions { io_threads: 1, queue_depth: 1, ..LocalStoreOptions::default() };
    let store = LocalStore::open(directory.path(), options).unwrap();
    let (reply, completions) = crossbeam_channel::unbounded();
    for op_id in 0..50u64 {
        let op = ObjectOp::PutIfAbsent { name: format!("q/{op_id}"), bytes: Arc::new(vec![0; 1024]) };
        store.submit(op_id, op, &reply);
    }
    let results: Vec<_> = (0..50).map(|_| completions.recv().unwrap().result).collect();
    assert!(results.iter().any(|result| matches!(result, Err(StoreError::Transient { .. }))));
    assert!(results.iter().all(|result| matches!(result, Ok(OpOutput::Created) | Err(StoreError::Transient { .. }))));
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Written for the journal and not yet durable on its own.
fn marked(path: &Path) -> bool {
    mode_of(path) & 0o1000 != 0
}

fn journal_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join(journal::DIRECTORY))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wal"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_clean_close_makes_journaled_objects_plain_and_removes_the_journal() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    Blocking::new(&store).put_if_absent("log/a", b"alpha".to_vec()).unwrap();
    assert!(marked(&directory.path().join("log/a")), "durable through the journal only");
    assert_eq!(journal_files(directory.path()).len(), 2);
    drop(store);
    assert_eq!(mode_of(&directory.path().join("log/a")), 0o644);
    assert!(journal_files(directory.path()).is_empty());
    let store = open(directory.path());
    assert_eq!(Blocking::new(&store).get("log/a", None).unwrap(), b"alpha");
}

#[test]
fn reading_a_marked_object_makes_it_durable_on_its_own() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    blocking.put_if_absent("log/a", b"alpha".to_vec()).unwrap();
    assert!(marked(&directory.path().join("log/a")));
    assert_eq!(blocking.get("log/a", Some(0..2)).unwrap(), b"al");
    assert_eq!(mode_of(&directory.path().join("log/a")), 0o644, "another leader may build on what it read");
}

#[test]
fn after_a_reboot_a_replay_restores_lost_and_torn_objects_and_removes_unacknowledged_ones() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let store = open(root);
    let blocking = Blocking::new(&store);
    for name in ["log/a", "log/b", "log/c"] {
        blocking.put_if_absent(name, format!("bytes of {name}").into_bytes()).unwrap();
    }
    store.crash();
    assert_eq!(journal_files(root).len(), 2, "a crash leaves the journal");
    // What a power loss can leave of objects written without a sync: one
    // link lost, one object a prefix of its bytes, one intact; and an object
    // linked whose record never reached the disk (marked, incomplete).
    for path in journal_files(root) {
        journal::tests_support::pretend_written_in_another_boot(&path);
    }
    fs::remove_file(root.join("log/a")).unwrap();
    fs::write(root.join("log/b"), b"bytes").unwrap();
    fs::write(root.join("log/d"), b"half of").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("log/d"), fs::Permissions::from_mode(journal::MARKED_MODE)).unwrap();
    }
    let store = open(root);
    for name in ["log/a", "log/b", "log/c"] {
        assert_eq!(mode_of(&root.join(name)), 0o644, "{name} is durable on its own");
    }
    let blocking = Blocking::new(&store);
    for name in ["log/a", "log/b", "log/c"] {
        assert_eq!(blocking.get(name, None).unwrap(), format!("bytes of {name}").as_bytes(), "{name}");
    }
    assert!(matches!(blocking.get("log/d", None), Err(StoreError::NotFound { .. })), "never acknowledged");
    assert_eq!(journal_files(root).len(), 2, "only the new instance's journal");
    assert!(matches!(blocking.put_if_absent("log/a", b"x".to_vec()), Err(StoreError::AlreadyExists { .. })));
}

#[test]
fn in_the_same_boot_a_replay_keeps_deletions_and_whole_leftovers() {
    let directory = tempfile::tempdir().unwrap();
    let root = directory.path();
    let store = open(root);
    let blocking = Blocking::new(&store);
    for name in ["log/a", "log/b"] {
        blocking.put_if_absent(name, format!("bytes of {name}").into_bytes()).unwrap();
    }
    store.crash();
    // Only the process died. Another instance deleted a recorded object
    // since, and the crashed one left a whole object it had linked but not
    // recorded (another leader may already have built on it).
    fs::remove_file(root.join("log/a")).unwrap();
    fs::write(root.join("log/c"), b"whole").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("log/c"), fs::Permissions::from_mode(journal::MARKED_MODE)).unwrap();
    }
    let store = open(root);
    assert_eq!(mode_of(&root.join("log/b")), 0o644);
    let blocking = Blocking::new(&store);
    assert_eq!(blocking.list_all("log/", None, 10).unwrap(), ["log/b", "log/c"], "nothing deleted comes back");
    assert_eq!(blocking.get("log/c", None).unwrap(), b"whole");
    assert_eq!(mode_of(&root.join("log/c")), 0o644);
}

#[test]
fn a_deleted_object_is_not_brought_back_by_a_replay_after_a_reboot() {
    let directory = tempfile::tempdir().unwrap();
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    blocking.put_if_absent("log/a", b"alpha".to_vec()).unwrap();
    blocking.put_if_absent("log/b", b"beta".to_vec()).unwrap();
    blocking.delete(vec!["log/a".into()]).unwrap();
    assert_eq!(mode_of(&directory.path().join("log/b")), 0o644, "the delete waited for a checkpoint");
    blocking.put_if_absent("log/c", b"gamma".to_vec()).unwrap();
    store.crash();
    for path in journal_files(directory.path()) {
        journal::tests_support::pretend_written_in_another_boot(&path);
    }
    let store = open(directory.path());
    let blocking = Blocking::new(&store);
    assert_eq!(blocking.list_all("log/", None, 10).unwrap(), ["log/b", "log/c"]);
    assert_eq!(blocking.get("log/c", None).unwrap(), b"gamma");
}

#[test]
fn checkpoints_when_full_keep_every_object() {
    let directory = tempfile::tempdir().unwrap();
    let options = LocalStoreOptions { journal_bytes: 8192, ..LocalStoreOptions::default() };
    let store = LocalStore::open(directory.path(), options.clone()).unwrap();
    let blocking = Blocking::new(&store);
    let names: Vec<String> = (0..40).map(|index| format!("log/{index:03}")).collect();
    for name in &names {
        blocking.put_if_absent(name, vec![name.as_bytes()[6]; 700]).unwrap();
    }
    // Too large for the journal: synced on its own.
    blocking.put_if_absent("log/large", vec![7; 10_000]).unwrap();
    assert_eq!(mode_of(&directory.path().join("log/large")), 0o644);
    let still_marked = names.iter().filter(|name| marked(&directory.path().join(name))).count();
    assert!((1..names.len()).contains(&still_marked), "older files were checkpointed: {still_marked} still marked");
    store.crash();
    for path in journal_files(directory.path()) {
        journal::tests_support::pretend_written_in_another_boot(&path);
    }
    for name in &names[names.len() - 3..] {
        fs::remove_file(directory.path().join(name)).unwrap(); // links lost
    }
    let store = LocalStore::open(directory.path(), options).unwrap();
    let blocking = Blocking::new(&store);
    for name in &names {
        assert_eq!(blocking.get(name, None).unwrap(), vec![name.as_bytes()[6]; 700], "{name}");
        assert_eq!(mode_of(&directory.path().join(name)), 0o644, "{name}");
    }
}

#[test]
fn records_are_checkpointed_once_old_enough_while_appends_go_on() {
    let directory = tempfile::tempdir().unwrap();
    let age = Duration::from_millis(300);
    let store = LocalStore::open(
        directory.path(),
        LocalStoreOptions { journal_checkpoint_age: age, ..LocalStoreOptions::default() },
    )
    .unwrap();
    let blocking = Blocking::new(&store);
    let first = directory.path().join("log/0");
    let started = Instant::now();
    blocking.put_if_absent("log/0", b"first".to_vec()).unwrap();
    assert!(marked(&first), "durable through the journal only");
    // Appends every 10 ms: never idle, and the file is far from full.
    let mut count = 1;
    while marked(&first) {
        assert!(started.elapsed() < Duration::from_secs(10), "the first record was never checkpointed");
        blocking.put_if_absent(&format!("log/{count}"), b"more".to_vec()).unwrap();
        count += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(started.elapsed() >= age, "checkpointed after {:?}, before it was {age:?} old", started.elapsed());
    assert_eq!(mode_of(&first), 0o644);
    drop(store);
    for index in 0..count {
        assert_eq!(mode_of(&directory.path().join(format!("log/{index}"))), 0o644);
    }
}

#[test]
fn a_live_instance_keeps_its_journal_and_its_marked_objects() {
    let directory = tempfile::tempdir().unwrap();
    let first = open(directory.path());
    Blocking::new(&first).put_if_absent("log/a", b"alpha".to_vec()).unwrap();
    let second = open(directory.path());
    assert_eq!(journal_files(directory.path()).len(), 4, "the first instance's journal is not replayed");
    assert!(marked(&directory.path().join("log/a")), "nor its object touched");
    let crashed = open(directory.path());
    Blocking::new(&crashed).put_if_absent("log/b", b"beta".to_vec()).unwrap();
    crashed.crash();
    // A third opens while the first two live: the crashed one's journal is
    // replayed; the live one's marked object is left alone.
    let third = open(directory.path());
    assert_eq!(journal_files(directory.path()).len(), 6);
    assert!(marked(&directory.path().join("log/a")));
    assert_eq!(mode_of(&directory.path().join("log/b")), 0o644);
    assert_eq!(Blocking::new(&third).get("log/b", None).unwrap(), b"beta");
    drop((first, second, third));
    assert!(journal_files(directory.path()).is_empty());
    assert_eq!(mode_of(&directory.path().join("log/a")), 0o644);
}

#[test]
fn journal_records_stop_at_the_first_damage() {
    let mut file = journal::tests_support::file_with(&[("log/a", b"alpha"), ("log/b", b"beta"), ("log/c", b"gamma")]);
    let names = |file: &[u8]| journal::records(file).records.into_iter().map(|(name, _)| name).collect::<Vec<_>>();
    assert_eq!(names(&file), ["log/a", "log/b", "log/c"]);
    assert_eq!(journal::records(&file).boot_id, [7; 16]);
    let last = file.len() - 64 - 1; // the last byte of "gamma", before the zeros
    file[last] ^= 1;
    assert_eq!(names(&file), ["log/a", "log/b"], "a damaged record ends the journal");
    file.truncate(last - 3);
    assert_eq!(names(&file), ["log/a", "log/b"], "so does a partial one");
    file[12] ^= 1;
    assert!(names(&file).is_empty(), "a damaged header holds nothing");
    assert!(journal::records(&[]).records.is_empty());
}
