//! The local store's write-ahead journal: what makes a put-if-absent
//! durable with one cheap sync instead of two expensive ones.
//!
//! Without it, a put-if-absent syncs a new file (a filesystem journal commit
//! for its allocation) and then its directory after the hard link (another
//! commit). With it, the object is written and hard-linked (the link is
//! still the fence between leaders) without a sync, its name and bytes are
//! appended to this store instance's journal file, and that file alone is
//! synced with `fdatasync`: once the file has been written through once,
//! its blocks are allocated, and the sync only flushes data.
//!
//! The journal is cut short at a *checkpoint*: the objects it covers are
//! unmarked (below), `syncfs` makes them and their directory entries durable,
//! and a new generation starts at the front of the file (records of older
//! generations are ignored). A checkpoint runs when the file is full, before
//! any delete (so a deleted object is never brought back by a replay), and
//! at a clean close, which also removes the file.
//!
//! Crash safety:
//! - An object written for the journal is created with the sticky bit set
//!   (*marked*: "not yet durable"). After a power loss a marked object may be
//!   missing, empty or a prefix of its bytes. Its put was acknowledged only
//!   if its record was synced, and a record is dropped only by a checkpoint,
//!   which unmarks and syncs the object first.
//! - At open, the journal of every instance that is gone (its file is not
//!   locked) is replayed: each record's object is rewritten, synced and
//!   unmarked unless it already holds exactly the record's bytes (a record
//!   exists only after its instance's link succeeded, so the name is that
//!   instance's). Then, if no other instance has the store open, every
//!   marked object left is removed: it belongs to a put that was never
//!   acknowledged. If another instance is alive there was no power loss
//!   since it opened, so such leftovers are whole objects, as a crash
//!   between link and reply always left.
//! - Each instance holds an exclusive `flock` on its journal file and a
//!   shared one on `.journal/lock` for its lifetime; an opener that gets
//!   `.journal/lock` exclusively knows it is alone.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::sync_directory;

pub(super) const DIRECTORY: &str = ".journal";
const LOCK_FILE: &str = "lock";
const EXTENSION: &str = "wal";
const HEADER_MAGIC: &[u8; 8] = b"STOATWAL";
const FORMAT_VERSION: u32 = 1;
/// Magic, format version, generation, crc32c of the three.
const HEADER_BYTES: u64 = 20;
const RECORD_MAGIC: u32 = 0x5354_4a52; // "STJR"
/// Magic, generation, name length, bytes length, crc32c.
const RECORD_HEADER_BYTES: usize = 20;
/// The mode of an object not yet durable: the sticky bit marks it.
pub(super) const MARKED_MODE: u32 = 0o1644;
const MARK: u32 = 0o1000;
const PLAIN_MODE: u32 = 0o644;

/// One store instance's journal.
pub(super) struct Journal {
    root: PathBuf,
    path: PathBuf,
    file: File,
    capacity: u64,
    state: Mutex<State>,
    /// Held (shared) for the instance's lifetime; see the module docs.
    _store_lock: File,
}

struct State {
    generation: u32,
    offset: u64,
    /// Objects recorded in this generation, unmarked at the checkpoint.
    recorded: Vec<PathBuf>,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Replayed {
    /// Journals of instances that were gone, replayed and removed.
    pub journals: usize,
    /// Objects rewritten from their records.
    pub restored: usize,
    /// Marked objects removed (puts never acknowledged).
    pub removed: usize,
}

impl Journal {
    /// Replays the journals of instances that are gone, then starts this
    /// instance's journal (`tag` names it) of `capacity` bytes.
    pub fn open(root: &Path, tag: &str, capacity: u64) -> io::Result<(Journal, Replayed)> {
        let directory = root.join(DIRECTORY);
        fs::create_dir_all(&directory)?;
        sync_directory(root)?;
        let store_lock = File::options().read(true).write(true).create(true).truncate(false).open(directory.join(LOCK_FILE))?;
        let alone = try_lock(&store_lock, true)?;
        if !alone {
            store_lock.lock_shared()?;
        }
        let mut replayed = Replayed::default();
        replay_gone(root, &directory, &mut replayed)?;
        if alone && replayed.journals > 0 {
            replayed.removed = remove_marked(root)?;
        }
        if alone {
            // Others may open (and replay) from here on: nothing of ours is
            // written yet.
            store_lock.lock_shared()?;
        }
        if replayed.journals > 0 {
            syncfs(root)?;
        }
        let path = directory.join(format!("{tag}.{EXTENSION}"));
        let file = File::options().read(true).write(true).create_new(true).open(&path)?;
        if !try_lock(&file, true)? {
            return Err(io::Error::other("a new journal file is locked by someone else"));
        }
        file.write_all_at(&header(1), 0)?;
        file.sync_all()?;
        sync_directory(&directory)?;
        let state = State { generation: 1, offset: HEADER_BYTES, recorded: Vec::new() };
        let journal = Journal {
            root: root.to_path_buf(),
            path,
            file,
            capacity: capacity.max(HEADER_BYTES + 4096),
            state: Mutex::new(state),
            _store_lock: store_lock,
        };
        Ok((journal, replayed))
    }

    /// Whether an object of `bytes` named `name` can be journaled (larger
    /// ones are written with their own syncs).
    pub fn fits(&self, name: &str, bytes: usize) -> bool {
        record_bytes(name, bytes) <= self.capacity - HEADER_BYTES
    }

    /// Records the object just linked at `path` and syncs the record: from
    /// then on the object survives a crash. Checkpoints first if the
    /// journal is full.
    pub fn append(&self, name: &str, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let length = record_bytes(name, bytes.len());
        {
            let mut state = self.lock();
            if state.offset + length > self.capacity {
                self.checkpoint_locked(&mut state)?;
            }
            let record = record(state.generation, name, bytes);
            self.file.write_all_at(&record, state.offset)?;
            state.offset += length;
            state.recorded.push(path.to_path_buf());
        }
        self.file.sync_data()
    }

    /// Makes every recorded object durable on its own and empties the
    /// journal.
    pub fn checkpoint(&self) -> io::Result<()> {
        let mut state = self.lock();
        self.checkpoint_locked(&mut state)
    }

    fn checkpoint_locked(&self, state: &mut State) -> io::Result<()> {
        if state.recorded.is_empty() {
            return Ok(());
        }
        for path in &state.recorded {
            match fs::set_permissions(path, fs::Permissions::from_mode(PLAIN_MODE)) {
                // Deleted since (a delete checkpoints first, so only by
                // someone else): nothing to keep.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        syncfs(&self.root)?;
        state.generation = state.generation.wrapping_add(1).max(1);
        self.file.write_all_at(&header(state.generation), 0)?;
        self.file.sync_data()?;
        state.offset = HEADER_BYTES;
        state.recorded.clear();
        Ok(())
    }

    /// A clean close: checkpoint, then remove the journal file.
    pub fn close(self) -> io::Result<()> {
        self.checkpoint()?;
        fs::remove_file(&self.path)?;
        sync_directory(self.path.parent().unwrap_or(&self.root))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn record_bytes(name: &str, bytes: usize) -> u64 {
    (RECORD_HEADER_BYTES + name.len() + bytes) as u64
}

fn header(generation: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES as usize);
    out.extend_from_slice(HEADER_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
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

/// The records of a journal file's current generation, in order: parsing
/// stops at the first that is not whole and valid (a record being written
/// at the crash, or one of an older generation).
pub(super) fn records(file: &[u8]) -> Vec<(String, &[u8])> {
    let header_valid = file.len() >= HEADER_BYTES as usize
        && &file[..8] == HEADER_MAGIC
        && u32_at(file, 8) == Some(FORMAT_VERSION)
        && u32_at(file, 16) == Some(crc32c::crc32c(&file[..16]));
    if !header_valid {
        return Vec::new();
    }
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
    found
}

/// Replays and removes the journal of every instance that is gone.
fn replay_gone(root: &Path, directory: &Path, replayed: &mut Replayed) -> io::Result<()> {
    for entry in fs::read_dir(directory)? {
        let path = entry?.path();
        if path.extension().and_then(|extension| extension.to_str()) != Some(EXTENSION) {
            continue;
        }
        let mut file = match File::options().read(true).write(true).open(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            other => other?,
        };
        if !try_lock(&file, true)? {
            continue; // a live instance's
        }
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)?;
        for (name, bytes) in records(&contents) {
            if super::validate_name(&name).is_err() {
                continue;
            }
            if restore(root, &root.join(&name), bytes)? {
                replayed.restored += 1;
            }
        }
        syncfs(root)?;
        fs::remove_file(&path)?;
        sync_directory(directory)?;
        replayed.journals += 1;
    }
    Ok(())
}

/// Makes the object at `path` hold exactly `bytes`, durably and unmarked;
/// true if it had to be rewritten.
fn restore(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if fs::read(path).is_ok_and(|present| present == bytes) {
        fs::set_permissions(path, fs::Permissions::from_mode(PLAIN_MODE))?;
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(root);
    fs::create_dir_all(parent)?;
    let temp = root.join(super::TEMP_DIRECTORY).join(format!("replay-{}", uuid::Uuid::new_v4().simple()));
    fs::write(&temp, bytes)?;
    File::open(&temp)?.sync_all()?;
    fs::rename(&temp, path)?;
    sync_directory(parent)?;
    Ok(true)
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
        let mut file = super::header(1);
        for (name, bytes) in records {
            file.extend_from_slice(&super::record(1, name, bytes));
        }
        file.extend_from_slice(&[0; 64]);
        file
    }
}
