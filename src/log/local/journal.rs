//! The local store's write-ahead journal: what makes a put-if-absent
//! durable with one cheap sync instead of two expensive ones.
//!
//! Without it, a put-if-absent syncs a new file (a filesystem journal commit
//! for its allocation) and then its directory after the hard link (another
//! commit). With it, the object is written and hard-linked (the link is
//! still the fence between leaders) without a sync, its name and bytes are
//! appended to this store instance's journal, and that file alone is synced
//! with `fdatasync`: once a journal file has been written through once, its
//! blocks are allocated, and the sync only flushes data.
//!
//! An instance's journal is two files used in turn. When the active one is
//! full, appends move to the other, and a background thread *checkpoints*
//! the full one: it unmarks the objects it covers (below), makes them and
//! their directory entries durable with `syncfs`, and starts a new
//! generation at the front of the file (records of older generations are
//! ignored). Commits never wait for a checkpoint unless both files are full.
//! Every delete waits for a checkpoint of what is recorded, so a deleted
//! object is never brought back; a clean close checkpoints and removes the
//! files.
//!
//! Crash safety:
//! - An object written for the journal is created with the sticky bit set
//!   (*marked*: "not durable on its own"). After a power loss a marked
//!   object may be missing, empty, a prefix of its bytes, or garbage. Its put
//!   was acknowledged only if its record was synced, and a record is dropped
//!   only by a checkpoint, which first unmarks and syncs the object.
//! - A reader that finds a marked object syncs and unmarks it before
//!   answering (its bytes are whole in memory: the write preceded the link),
//!   so nothing another leader may build on stays "not durable".
//! - At open, the journal of every instance that is gone (its files are not
//!   locked) is replayed. Its header names the boot it was written in. In
//!   the same boot nothing was lost (only the process died): the recorded
//!   objects that exist are unmarked and synced, and a missing one was
//!   deleted since, so it stays deleted. After a reboot each record's object
//!   is rewritten unless it holds exactly the record's bytes (a record exists
//!   only after its instance's link succeeded, so the name is that
//!   instance's), and every marked object no record covers is removed: its
//!   put was never acknowledged. The first opener after a reboot is alone
//!   (every instance died), and later openers wait for it.
//! - Each instance holds an exclusive lock on its journal files and a shared
//!   one on `.journal/lock` for its lifetime; an opener takes
//!   `.journal/lock` exclusively while it replays, if it can.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::sync_directory;

pub(super) const DIRECTORY: &str = ".journal";
const LOCK_FILE: &str = "lock";
const EXTENSION: &str = "wal";
/// A journal file being made, before it is renamed to `.wal`.
const NEW_EXTENSION: &str = "new";
const HEADER_MAGIC: &[u8; 8] = b"STOATWAL";
const FORMAT_VERSION: u32 = 1;
/// Magic, format version, generation, boot id, crc32c of the others.
const HEADER_BYTES: u64 = 36;
const RECORD_MAGIC: u32 = 0x5354_4a52; // "STJR"
/// Magic, generation, name length, bytes length, crc32c.
const RECORD_HEADER_BYTES: usize = 20;
/// The mode of an object not yet durable on its own: the sticky bit marks
/// it.
pub(super) const MARKED_MODE: u32 = 0o1644;
pub(super) const MARK: u32 = 0o1000;
pub(super) const PLAIN_MODE: u32 = 0o644;
/// The default `checkpoint_age` of [`Journal::open`]: a file whose first
/// record is this old is checkpointed even if it is not full. That bounds
/// what one checkpoint's `syncfs` writes (the objects made meanwhile, and
/// their directory entries), and so how long the journal syncs beside it are
/// slowed; it also empties an idle (or fenced) instance's journal. Measured
/// in docs/benchmarks.md (2 s of idleness was the rule before; checkpoints
/// then came only as a 16 MiB file filled, every few seconds under load,
/// and each one's `syncfs` stalled commits for tens of milliseconds).
pub const CHECKPOINT_AGE_DEFAULT: Duration = Duration::from_millis(250);
/// Record lengths are u32s.
const CAPACITY_MAX: u64 = 1 << 31;

/// One store instance's journal.
pub(super) struct Journal {
    shared: Arc<Shared>,
    paths: [PathBuf; 2],
    /// Each file's capacity in bytes.
    capacity: u64,
    checkpoints: Option<Sender<usize>>,
    checkpointer: Option<JoinHandle<()>>,
    /// Held (shared) for the instance's lifetime; see the module docs.
    _store_lock: File,
}

struct Shared {
    root: PathBuf,
    boot_id: [u8; 16],
    files: [File; 2],
    state: Mutex<State>,
    /// Signalled when a checkpoint ends.
    checkpointed: Condvar,
    /// Set by the first error writing or syncing the journal, or making
    /// objects durable at a checkpoint: from then on every put is synced on
    /// its own, and the files are left for the replay (a failed sync may
    /// have lost a record that later syncs report as written).
    failed: AtomicBool,
    checkpoint_age: Duration,
}

struct State {
    active: usize,
    halves: [Half; 2],
    /// A checkpoint of that file is under way (no appends go there).
    checkpointing: [bool; 2],
}

#[derive(Default)]
struct Half {
    generation: u32,
    offset: u64,
    /// When this generation's first record was appended.
    first_append: Option<Instant>,
    /// Objects recorded in this generation, unmarked at its checkpoint.
    recorded: Vec<PathBuf>,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Journal files of instances that were gone, replayed and removed.
    pub journals: usize,
    /// Objects rewritten from their records (after a reboot).
    pub restored: usize,
    /// Marked objects no record covers, removed (after a reboot).
    pub removed: usize,
}

impl Journal {
    /// Replays the journals of instances that are gone, then starts this
    /// instance's journal (`tag` names its files), two files of `capacity`
    /// bytes each.
    /// Fails with `Unsupported` where files cannot carry the mark (the
    /// sticky bit).
    pub fn open(root: &Path, tag: &str, capacity: u64, checkpoint_age: Duration) -> io::Result<(Journal, Replayed)> {
        let directory = root.join(DIRECTORY);
        fs::create_dir_all(&directory)?;
        sync_directory(root)?;
        probe_mark(&directory, tag)?;
        let store_lock =
            File::options().read(true).write(true).create(true).truncate(false).open(directory.join(LOCK_FILE))?;
        let alone = try_lock(&store_lock, true)?;
        if !alone {
            store_lock.lock_shared()?;
        }
        let boot_id = boot_id();
        let mut replayed = Replayed::default();
        let rebooted = replay_gone(root, &directory, &boot_id, &mut replayed)?;
        if alone && rebooted {
            replayed.removed = remove_marked(root)?;
        }
        if replayed.journals > 0 {
            syncfs(root)?;
        }
        if alone {
            // Others may open (and replay) from here on.
            store_lock.lock_shared()?;
        }
        let paths = [0, 1].map(|index| directory.join(format!("{tag}-{index}.{EXTENSION}")));
        let mut files = Vec::with_capacity(2);
        for path in &paths {
            // Made whole and locked under another name, so that no replayer
            // ever sees it unlocked.
            let new = path.with_extension(NEW_EXTENSION);
            let file = File::options().read(true).write(true).create_new(true).open(&new)?;
            if !try_lock(&file, true)? {
                return Err(io::Error::other("a new journal file is locked by someone else"));
            }
            file.write_all_at(&header(1, &boot_id), 0)?;
            file.sync_all()?;
            fs::rename(&new, path)?;
            files.push(file);
        }
        sync_directory(&directory)?;
        let [first, second]: [File; 2] = files.try_into().map_err(|_| io::Error::other("two journal files"))?;
        let half = || Half { generation: 1, offset: HEADER_BYTES, first_append: None, recorded: Vec::new() };
        let state = State { active: 0, halves: [half(), half()], checkpointing: [false; 2] };
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            boot_id,
            files: [first, second],
            state: Mutex::new(state),
            checkpointed: Condvar::new(),
            failed: AtomicBool::new(false),
            checkpoint_age,
        });
        let (checkpoints, jobs) = crossbeam_channel::unbounded::<usize>();
        let worker = Arc::clone(&shared);
        let checkpointer = std::thread::Builder::new().name("stoat-checkpoint".into()).spawn(move || loop {
            match jobs.recv_timeout(worker.until_due()) {
                Ok(index) => worker.checkpoint(index),
                Err(RecvTimeoutError::Timeout) => worker.checkpoint_if_due(),
                Err(RecvTimeoutError::Disconnected) => return,
            }
        })?;
        let journal = Journal {
            shared,
            paths,
            capacity: capacity.clamp(HEADER_BYTES + 4096, CAPACITY_MAX),
            checkpoints: Some(checkpoints),
            checkpointer: Some(checkpointer),
            _store_lock: store_lock,
        };
        Ok((journal, replayed))
    }

    /// Whether an object of `bytes` named `name` can be journaled (larger
    /// ones are written with their own syncs).
    /// After a journal error nothing is.
    pub fn fits(&self, name: &str, bytes: usize) -> bool {
        record_bytes(name, bytes) <= self.capacity - HEADER_BYTES && !self.shared.failed.load(Ordering::Acquire)
    }

    /// Records the object just linked at `path` and syncs the record: from
    /// then on the object survives a crash. Moves to the other file when the
    /// active one is full (waiting only if its checkpoint is not done).
    pub fn append(&self, name: &str, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let length = record_bytes(name, bytes.len());
        let index = {
            let mut state = self.shared.lock();
            self.shared.check()?;
            while state.halves[state.active].offset + length > self.capacity {
                let (active, other) = (state.active, 1 - state.active);
                if state.checkpointing[other] {
                    state = self.shared.wait(state);
                    self.shared.check()?;
                    continue;
                }
                state.active = other;
                self.start_checkpoint(&mut state, active)?;
            }
            let active = state.active;
            let half = &mut state.halves[active];
            half.first_append.get_or_insert_with(Instant::now);
            let written = self.shared.files[active].write_all_at(&record(half.generation, name, bytes), half.offset);
            self.shared.fail_on(written)?;
            half.offset += length;
            half.recorded.push(path.to_path_buf());
            active
        };
        self.shared.fail_on(self.shared.files[index].sync_data())
    }

    /// Waits until every object recorded so far is durable on its own.
    /// Appends go on meanwhile (into the other file).
    pub fn checkpoint(&self) -> io::Result<()> {
        let mut state = self.shared.lock();
        while state.checkpointing.iter().any(|&busy| busy) {
            state = self.shared.wait(state);
        }
        self.shared.check()?;
        let active = state.active;
        if state.halves[active].recorded.is_empty() {
            return Ok(());
        }
        state.active = 1 - active;
        self.start_checkpoint(&mut state, active)?;
        while state.checkpointing[active] {
            state = self.shared.wait(state);
        }
        self.shared.check()
    }

    fn start_checkpoint(&self, state: &mut State, index: usize) -> io::Result<()> {
        let sent = self.checkpoints.as_ref().is_some_and(|checkpoints| checkpoints.send(index).is_ok());
        if !sent {
            return Err(io::Error::other("the journal's checkpoint thread is gone"));
        }
        state.checkpointing[index] = true;
        Ok(())
    }

    /// A clean close: checkpoint, then remove the journal files (after a
    /// journal error they are left for the replay).
    pub fn close(self) -> io::Result<()> {
        self.checkpoint()?;
        for path in &self.paths {
            fs::remove_file(path)?;
        }
        sync_directory(self.paths[0].parent().unwrap_or(&self.shared.root))
    }
}

impl Drop for Journal {
    /// Stops the checkpoint thread (after the checkpoint under way, if any).
    fn drop(&mut self) {
        self.checkpoints = None;
        if let Some(checkpointer) = self.checkpointer.take() {
            let _ = checkpointer.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.checkpointed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check(&self) -> io::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("the journal failed earlier; puts are synced on their own"));
        }
        Ok(())
    }

    fn fail_on<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(error) = &result {
            if !self.failed.swap(true, Ordering::AcqRel) {
                tracing::error!(%error, "the local store's journal failed; every put is synced on its own from now on");
            }
        }
        result
    }

    /// Checkpoints file `index` (no appends go there meanwhile). On an
    /// error the journal fails (its records stay for the replay).
    fn checkpoint(&self, index: usize) {
        let recorded = std::mem::take(&mut self.lock().halves[index].recorded);
        let durable = self.make_durable(&recorded);
        let mut state = self.lock();
        if self.fail_on(durable).is_ok() {
            let generation = state.halves[index].generation.wrapping_add(1).max(1);
            let reset = self.files[index]
                .write_all_at(&header(generation, &self.boot_id), 0)
                .and_then(|()| self.files[index].sync_data());
            if self.fail_on(reset).is_ok() {
                state.halves[index] =
                    Half { generation, offset: HEADER_BYTES, first_append: None, recorded: Vec::new() };
            }
        }
        state.checkpointing[index] = false;
        drop(state);
        self.checkpointed.notify_all();
    }

    /// How long until the active file's first record is `checkpoint_age`
    /// old (`checkpoint_age` while it has none).
    fn until_due(&self) -> Duration {
        let state = self.lock();
        match state.halves[state.active].first_append {
            Some(first) => {
                (first + self.checkpoint_age).saturating_duration_since(Instant::now()).max(Duration::from_millis(1))
            }
            None => self.checkpoint_age,
        }
    }

    /// Checkpoints the active file once its first record is
    /// `checkpoint_age` old (unless a checkpoint is under way).
    fn checkpoint_if_due(&self) {
        let index = {
            let mut state = self.lock();
            let active = state.active;
            let due = state.halves[active].first_append.is_some_and(|first| first.elapsed() >= self.checkpoint_age);
            let busy = state.checkpointing.iter().any(|&busy| busy);
            if !due || busy || state.halves[active].recorded.is_empty() || self.failed.load(Ordering::Acquire) {
                return;
            }
            state.active = 1 - active;
            state.checkpointing[active] = true;
            active
        };
        self.checkpoint(index);
    }

    fn make_durable(&self, recorded: &[PathBuf]) -> io::Result<()> {
        for path in recorded {
            match fs::set_permissions(path, fs::Permissions::from_mode(PLAIN_MODE)) {
                // Deleted since (a delete waits for a checkpoint first, so
                // by another instance): nothing to keep.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        syncfs(&self.root)
    }
}

fn record_bytes(name: &str, bytes: usize) -> u64 {
    (RECORD_HEADER_BYTES + name.len() + bytes) as u64
}

fn header(generation: u32, boot_id: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES as usize);
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(boot_id);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A record: magic, generation, name length, bytes length, crc32c (of the
/// generation, the lengths, the name and the bytes), name, bytes. All
/// integers little-endian u32.
fn record(generation: u32, name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + name.len() + bytes.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let crc = record_crc(generation, name.as_bytes(), bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(bytes);
    out
}

fn record_crc(generation: u32, name: &[u8], bytes: &[u8]) -> u32 {
    let mut crc = crc32c::crc32c(&generation.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(name.len() as u32).to_le_bytes());
    crc = crc32c::crc32c_append(crc, &(bytes.len() as u32).to_le_bytes());
    crc = crc32c::crc32c_append(crc, name);
    crc32c::crc32c_append(crc, bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|slice| u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

/// A journal file's contents: the boot it was written in and the records of
/// its current generation, in order. Parsing stops at the first record that
/// is not whole and valid (one being written at the crash, or one of an
/// older generation). A damaged header holds nothing.
pub(super) struct Contents<'a> {
    pub boot_id: [u8; 16],
    pub records: Vec<(String, &'a [u8])>,
}

pub(super) fn records(file: &[u8]) -> Contents<'_> {
    let crc_at = HEADER_BYTES as usize - 4;
    let header_valid = file.len() >= HEADER_BYTES as usize
        && &file[..8] == HEADER_MAGIC
        && u32_at(file, 8) == Some(FORMAT_VERSION)
        && u32_at(file, crc_at) == Some(crc32c::crc32c(&file[..crc_at]));
    if !header_valid {
        return Contents { boot_id: [0; 16], records: Vec::new() };
    }
    let mut boot_id = [0; 16];
    boot_id.copy_from_slice(&file[16..32]);
    let generation = u32_at(file, 12).unwrap_or(0);
    let mut found = Vec::new();
    let mut at = HEADER_BYTES as usize;
    loop {
        let fields = (u32_at(file, at), u32_at(file, at + 4), u32_at(file, at + 8), u32_at(file, at + 12));
        let (Some(RECORD_MAGIC), Some(record_generation), Some(name_length), Some(bytes_length)) = fields else {
            break;
        };
        let name_start = at + RECORD_HEADER_BYTES;
        let Some(bytes_start) = name_start.checked_add(name_length as usize) else { break };
        let Some(end) = bytes_start.checked_add(bytes_length as usize) else { break };
        if record_generation != generation || end > file.len() {
            break;
        }
        let (name, bytes) = (&file[name_start..bytes_start], &file[bytes_start..end]);
        if u32_at(file, at + 16) != Some(record_crc(generation, name, bytes)) {
            break;
        }
        let Ok(name) = std::str::from_utf8(name) else { break };
        found.push((name.to_owned(), bytes));
        at = end;
    }
    Contents { boot_id, records: found }
}

/// Replays and removes the journal files of every instance that is gone;
/// true if one of them was written before a reboot (or in an unknown boot).
fn replay_gone(root: &Path, directory: &Path, boot_id: &[u8; 16], replayed: &mut Replayed) -> io::Result<bool> {
    let mut rebooted = false;
    for entry in fs::read_dir(directory)? {
        let path = entry?.path();
        let extension = path.extension().and_then(|extension| extension.to_str());
        if extension != Some(EXTENSION) && extension != Some(NEW_EXTENSION) {
            continue;
        }
        let mut file = match File::options().read(true).write(true).open(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if !try_lock(&file, true)? {
            continue; // a live instance's
        }
        // Another replayer may have removed it between our open and lock.
        let still_there = fs::metadata(&path).is_ok_and(|named| named.ino() == file.metadata().map_or(0, |m| m.ino()));
        if !still_there {
            continue;
        }
        if extension == Some(NEW_EXTENSION) {
            // Never renamed into place: it holds no acknowledged record.
            remove_if_present(&path)?;
            continue;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let contents = records(&bytes);
        let same_boot = contents.boot_id == *boot_id && *boot_id != [0; 16];
        rebooted |= !same_boot;
        for (name, bytes) in contents.records {
            if super::validate_name(&name).is_err() {
                continue;
            }
            let path = root.join(&name);
            if same_boot {
                // Only the process died: the object is whole, or deleted.
                match fs::set_permissions(&path, fs::Permissions::from_mode(PLAIN_MODE)) {
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    other => other?,
                }
            } else if restore(root, &path, bytes)? {
                replayed.restored += 1;
            }
        }
        syncfs(root)?;
        remove_if_present(&path)?;
        sync_directory(directory)?;
        replayed.journals += 1;
    }
    Ok(rebooted)
}

/// Makes the object at `path` hold exactly `bytes`, durably and unmarked;
/// true if it had to be rewritten.
fn restore(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if path.is_dir() || path.ancestors().skip(1).any(|ancestor| ancestor.starts_with(root) && ancestor.is_file()) {
        tracing::warn!(path = %path.display(), "a journal record's name is now a directory or under a file; skipped");
        return Ok(false);
    }
    if fs::read(path).is_ok_and(|present| present == bytes) {
        fs::set_permissions(path, fs::Permissions::from_mode(PLAIN_MODE))?;
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(root);
    fs::create_dir_all(parent)?;
    let temp = root.join(super::TEMP_DIRECTORY).join(format!("replay-{}", uuid::Uuid::new_v4().simple()));
    fs::write(&temp, bytes)?;
    fs::set_permissions(&temp, fs::Permissions::from_mode(PLAIN_MODE))?;
    File::open(&temp)?.sync_all()?;
    fs::rename(&temp, path)?;
    sync_directory(parent)?;
    Ok(true)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Checks that a file created with the mark keeps it.
fn probe_mark(directory: &Path, tag: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = directory.join(format!("{tag}.probe"));
    let created = File::options().write(true).create_new(true).mode(MARKED_MODE).open(&probe);
    let kept = created.and_then(|file| file.metadata()).map(|metadata| metadata.permissions().mode() & MARK != 0);
    let _ = fs::remove_file(&probe);
    if !kept? {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "files here cannot carry the sticky bit"));
    }
    Ok(())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or zeros if unknown.
fn boot_id() -> [u8; 16] {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|text| uuid::Uuid::parse_str(text.trim()).ok())
        .map_or([0; 16], |id| *id.as_bytes())
}

/// Removes every marked object under `root` (not under `.` directories).
fn remove_marked(root: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        let mut removed_here = false;
        for entry in fs::read_dir(&directory)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                directories.push(entry.path());
            } else if metadata.permissions().mode() & MARK != 0 {
                fs::remove_file(entry.path())?;
                removed += 1;
                removed_here = true;
            }
        }
        if removed_here {
            sync_directory(&directory)?;
        }
    }
    Ok(removed)
}

/// Takes `lock` without waiting; false if another holder has it.
fn try_lock(file: &File, exclusive: bool) -> io::Result<bool> {
    let taken = if exclusive { file.try_lock() } else { file.try_lock_shared() };
    match taken {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

fn syncfs(root: &Path) -> io::Result<()> {
    crate::ops::sys::sync_filesystem(root)
}

#[cfg(test)]
pub(super) mod tests_support {
    /// A journal file of generation 1 holding `records`, then zeros.
    pub fn file_with(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut file = super::header(1, &[7; 16]);
        for (name, bytes) in records {
            file.extend_from_slice(&super::record(1, name, bytes));
        }
        file.extend_from_slice(&[0; 64]);
        file
    }

    /// Rewrites a journal file's header as if written before a reboot.
    pub fn pretend_written_in_another_boot(path: &std::path::Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let generation = u32::from_le_bytes(bytes[12..16].try_into().unwrap());
        let header = super::header(generation, &[9; 16]);
        bytes[..header.len()].copy_from_slice(&header);
        std::fs::write(path, bytes).unwrap();
    }
}
