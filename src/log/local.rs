//! The local-disk object store: objects are files under a root directory,
//! operations run on a small pool of IO threads and complete on the caller's
//! channel.
//!
//! A name's `/`-separated segments are directories and a file under the root
//! (`log/00000000000000000042.batch` is `ROOT/log/00000000000000000042.batch`),
//! so an operator can `ls` the log. Files and directories whose names start
//! with `.` are the store's own and never listed; temporary files live in
//! `ROOT/.tmp/`.
//!
//! Invariants:
//! - put-if-absent is exclusive across threads and processes: the bytes are
//!   written to a new unnamed file (`O_TMPFILE`; where the filesystem has
//!   none, a fresh temporary file), then hard-linked to the final name,
//!   which fails if the name exists. A reader never sees a partial object.
//! - put-if-absent is durable before success is reported: the name and bytes
//!   are appended to the store's write-ahead journal and the journal is
//!   synced (`journal.rs`: one `fdatasync`, replayed at the next open after
//!   a crash); an object too large for the journal, or a store opened with
//!   `journal_bytes: 0`, has its file and then its directory synced instead.
//!   A crash leaves at most a temporary file, never listed (an unnamed file
//!   leaves nothing), or an object never acknowledged, removed at the next
//!   open if it may be incomplete.
//! - listings are in byte order of names, even across directories (a
//!   directory sorts as its name followed by `/`).
//! - a name cannot be both an object and a directory of other objects (`a`
//!   and `a/b`); such a put fails with a permanent error.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::store::{validate_name, Completion, ListPage, ObjectOp, ObjectStore, OpId, OpOutput, StoreError};

mod journal;

const TEMP_DIRECTORY: &str = ".tmp";
/// Most names one listing returns, as S3 does; callers page with
/// `start_after`.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Temporary files older than this at open are leftovers of a crash.
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
pub struct LocalStoreOptions {
    /// Threads running operations; each runs one at a time.
    pub io_threads: usize,
    /// Operations queued for the threads before `submit` answers with a
    /// transient "queue full" error.
    pub queue_depth: usize,
    /// Sync files and directories before reporting a write. Only tests and
    /// benchmarks turn this off.
    pub sync: bool,
    /// Size of the write-ahead journal file (`journal.rs`); 0 syncs every
    /// put-if-absent on its own (a file and a directory sync). Unused
    /// without `sync`.
    pub journal_bytes: u64,
    /// A journal file is checkpointed once its first record is this old,
    /// full or not (`journal::CHECKPOINT_AGE_DEFAULT`).
    pub journal_checkpoint_age: std::time::Duration,
    /// Write new objects as unnamed files (`O_TMPFILE`) where the filesystem
    /// has them; otherwise, or when false, under temporary names.
    pub unnamed_files: bool,
}

/// The journal's default size: about 4,000 batches of 4 KiB between
/// checkpoints.
pub const JOURNAL_BYTES_DEFAULT: u64 = 16 << 20;

impl Default for LocalStoreOptions {
    fn default() -> Self {
        LocalStoreOptions {
            io_threads: 2,
            queue_depth: 1024,
            sync: true,
            journal_bytes: JOURNAL_BYTES_DEFAULT,
            journal_checkpoint_age: journal::CHECKPOINT_AGE_DEFAULT,
            unnamed_files: true,
        }
    }
}

/// An [`ObjectStore`] on a local directory.
pub struct LocalStore {
    disk: Arc<Disk>,
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Set by tests to leave as a crash would: no checkpoint, journal kept.
    crashed: bool,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("LocalStore").field("root", &self.disk.root).finish()
    }
}

struct Job {
    op_id: OpId,
    op: ObjectOp,
    reply: Sender<Completion>,
}

impl LocalStore {
    /// Creates `root` if needed, removes stale temporary files, replays the
    /// journals a crash left, and starts the IO threads.
    pub fn open(root: impl Into<PathBuf>, options: LocalStoreOptions) -> io::Result<Self> {
        let disk = Arc::new(Disk::open(root.into(), &options)?);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(options.queue_depth.max(1));
        let threads = (0..options.io_threads.max(1))
            .map(|index| {
                let (disk, queue) = (Arc::clone(&disk), queue.clone());
                std::thread::Builder::new().name(format!("stoat-disk-{index}")).spawn(move || run_jobs(&disk, &queue))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(LocalStore { disk, jobs: Some(jobs), threads, crashed: false })
    }

    /// Stops as a crash of the process would: operations finish, but the
    /// journal is neither checkpointed nor removed (for tests of replay).
    #[cfg(test)]
    fn crash(mut self) {
        self.crashed = true;
    }

    pub fn root(&self) -> &Path {
        &self.disk.root
    }
}

impl ObjectStore for LocalStore {
    fn submit(&self, op_id: OpId, op: ObjectOp, reply: &Sender<Completion>) {
        let Some(jobs) = &self.jobs else { return };
        let refused = match jobs.try_send(Job { op_id, op, reply: reply.clone() }) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => StoreError::transient("local store queue is full"),
            Err(TrySendError::Disconnected(_)) => StoreError::transient("local store is closed"),
        };
        let _ = reply.send(Completion { op_id, result: Err(refused) });
    }
}

impl Drop for LocalStore {
    /// Lets queued operations finish, stops the threads, then makes the
    /// journaled objects durable on their own and removes the journal.
    fn drop(&mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let journal = Arc::get_mut(&mut self.disk).and_then(|disk| disk.journal.take());
        if let (Some(journal), false) = (journal, self.crashed) {
            if let Err(error) = journal.close() {
                // The journal stays and is replayed at the next open.
                tracing::warn!(%error, "closing the local store's journal failed");
            }
        }
    }
}

fn run_jobs(disk: &Disk, queue: &Receiver<Job>) {
    for job in queue.iter() {
        let result = disk.run(job.op);
        let _ = job.reply.send(Completion { op_id: job.op_id, result });
    }
}

/// The synchronous operations, run by the IO threads.
struct Disk {
    root: PathBuf,
    temp_directory: PathBuf,
    sync: bool,
    /// Makes temporary file names unique across processes and restarts.
    temp_tag: String,
    temp_counter: AtomicU64,
    /// New objects are written as unnamed files (`O_TMPFILE`) and linked
    /// from there, where the filesystem can (probed at open).
    unnamed_files: bool,
    journal: Option<journal::Journal>,
}

/// A new object's bytes, written and not yet under their name.
enum Staged {
    Unnamed(File),
    Named(PathBuf),
}

impl Staged {
    /// Links the bytes at `path`; `AlreadyExists` if the name is taken.
    fn link(&self, path: &Path) -> io::Result<()> {
        match self {
            Staged::Unnamed(file) => crate::ops::sys::link_unnamed(file, path),
            Staged::Named(temp) => fs::hard_link(temp, path),
        }
    }

    /// Removes the temporary name, if there is one (an unnamed file goes
    /// when it is closed).
    fn discard(self) {
        if let Staged::Named(temp) = self {
            let _ = fs::remove_file(temp);
        }
    }
}

impl Disk {
    fn open(root: PathBuf, options: &LocalStoreOptions) -> io::Result<Disk> {
        let temp_directory = root.join(TEMP_DIRECTORY);
        fs::create_dir_all(&temp_directory)?;
        if options.sync {
            sync_directory(&root)?;
        }
        remove_stale_temp_files(&temp_directory);
        let temp_tag = uuid::Uuid::new_v4().simple().to_string();
        let journal = if options.sync && options.journal_bytes > 0 {
            match journal::Journal::open(&root, &temp_tag, options.journal_bytes, options.journal_checkpoint_age) {
                Ok((journal, replayed)) => {
                    if replayed != journal::Replayed::default() {
                        tracing::warn!(
                            journals = replayed.journals,
                            restored = replayed.restored,
                            removed = replayed.removed,
                            "replayed the journals of a local store that was not closed cleanly"
                        );
                    }
                    Some(journal)
                }
                Err(error) if error.kind() == io::ErrorKind::Unsupported => {
                    tracing::warn!(%error, "no journal on this filesystem: every put is synced on its own");
                    None
                }
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        let unnamed_files = options.unnamed_files && unnamed_files_work(&temp_directory, &temp_tag, journal.is_some());
        if options.unnamed_files && !unnamed_files {
            tracing::info!("no unnamed files (O_TMPFILE) here: objects are written under temporary names");
        }
        Ok(Disk {
            root,
            temp_directory,
            sync: options.sync,
            temp_tag,
            temp_counter: AtomicU64::new(0),
            unnamed_files,
            journal,
        })
    }

    fn run(&self, op: ObjectOp) -> Result<OpOutput, StoreError> {
        match op {
            ObjectOp::PutIfAbsent { name, bytes } => self.put_if_absent(&name, &bytes).map(|()| OpOutput::Created),
            ObjectOp::Put { name, bytes } => self.put(&name, &bytes).map(|()| OpOutput::Created),
            ObjectOp::Get { name, range } => self.get(&name, range).map(OpOutput::Bytes),
            ObjectOp::List { prefix, start_after, limit } => {
                self.list(&prefix, start_after.as_deref(), limit).map(OpOutput::Listed)
            }
            ObjectOp::Delete { names } => self.delete(&names).map(|()| OpOutput::Deleted),
        }
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        validate_name(name)?;
        let path = self.root.join(name);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        let journal = self.journal.as_ref().filter(|journal| journal.fits(name, bytes.len()));
        let staged = self.stage(bytes, journal.is_some()).map_err(|error| io_error(error, name))?;
        // The directory is made only when the link finds it missing: nearly
        // every put goes to one that exists.
        let mut linked = staged.link(&path);
        if linked.as_ref().is_err_and(|error| error.kind() == io::ErrorKind::NotFound) {
            linked = self.create_directories(&parent).and_then(|()| staged.link(&path));
        }
        staged.discard();
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {
                return Err(StoreError::permanent(format!("{name:?} is a directory of other objects")));
            }
            Err(error) => return Err(io_error(error, name)),
        }
        match journal {
            Some(journal) => journal.append(name, &path, bytes).or_else(|error| {
                // The object stays linked even if this fails: it is the
                // name's fence (the put is then not acknowledged).
                tracing::warn!(%error, name, "the journal failed; syncing the object on its own");
                make_durable(&path, &parent)
            }),
            None if self.sync => sync_directory(&parent),
            None => Ok(()),
        }
        .map_err(|error| io_error(error, name))
    }

    /// Creates or replaces: the bytes go to a synced temporary file that is
    /// renamed over the name (atomic on POSIX), then the directory is synced.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        validate_name(name)?;
        let path = self.root.join(name);
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        self.create_directories(&parent).map_err(|error| io_error(error, name))?;
        if path.is_dir() {
            return Err(StoreError::permanent(format!("{name:?} is a directory of other objects")));
        }
        let temp = self.write_temp_file(bytes, false).map_err(|error| io_error(error, name))?;
        if let Err(error) = fs::rename(&temp, &path) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(error, name));
        }
        if self.sync {
            sync_directory(&parent).map_err(|error| io_error(error, name))?;
        }
        Ok(())
    }

    /// A new object's bytes in a file of its own, to be linked under its
    /// name: an unnamed file where the filesystem has them (no temporary
    /// name to create and remove, and nothing left behind by a crash),
    /// otherwise a temporary file. Synced when the store syncs, or, for the
    /// journal, not synced and marked (`journal::MARKED_MODE`).
    fn stage(&self, bytes: &[u8], for_journal: bool) -> io::Result<Staged> {
        if !self.unnamed_files {
            return self.write_temp_file(bytes, for_journal).map(Staged::Named);
        }
        let mut file = crate::ops::sys::create_unnamed(&self.temp_directory, Self::mode(for_journal))?;
        self.write_new(&mut file, bytes, for_journal)?;
        Ok(Staged::Unnamed(file))
    }

    /// The mode of a new object. The mark is set as the file is created, so
    /// no link can make the name durable without it (the umask never clears
    /// the sticky bit).
    fn mode(for_journal: bool) -> u32 {
        if for_journal {
            journal::MARKED_MODE
        } else {
            0o644
        }
    }

    /// A new temporary file holding `bytes`, written as `stage` says.
    fn write_temp_file(&self, bytes: &[u8], for_journal: bool) -> io::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let counter = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = self.temp_directory.join(format!("{}-{counter}", self.temp_tag));
        let written = File::options()
            .write(true)
            .create_new(true)
            .mode(Self::mode(for_journal))
            .open(&temp)
            .and_then(|mut file| self.write_new(&mut file, bytes, for_journal));
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        Ok(temp)
    }

    fn write_new(&self, file: &mut File, bytes: &[u8], for_journal: bool) -> io::Result<()> {
        file.write_all(bytes)?;
        if self.sync && !for_journal {
            file.sync_data()?;
        } else if self.sync {
            // The journal's checkpoint makes it durable later; writing it
            // out now keeps that checkpoint's sync short, and the journal
            // syncs it would slow (docs/benchmarks.md).
            crate::ops::sys::start_writeback(file);
        }
        Ok(())
    }

    /// Creates the missing directories on the way to `directory`, syncing
    /// each new directory's parent so that the new entry is durable.
    fn create_directories(&self, directory: &Path) -> io::Result<()> {
        if directory.is_dir() {
            return Ok(());
        }
        let parent = directory.parent().unwrap_or(&self.root);
        self.create_directories(parent)?;
        match fs::create_dir(directory) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
            _ => {}
        }
        if self.sync {
            sync_directory(parent)?;
        }
        Ok(())
    }

    fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>, StoreError> {
        validate_name(name)?;
        let path = self.root.join(name);
        let mut file = File::open(&path).map_err(|error| io_error(error, name))?;
        let metadata = file.metadata().map_err(|error| io_error(error, name))?;
        if metadata.is_dir() {
            return Err(StoreError::NotFound { name: name.to_owned() });
        }
        if self.sync && is_marked(&metadata) {
            // Whoever reads it may build on it: durable on its own first.
            let parent = path.parent().unwrap_or(&self.root);
            make_durable(&path, parent).map_err(|error| io_error(error, name))?;
        }
        let size_bytes = metadata.len();
        let range = range.unwrap_or(0..size_bytes);
        let start = range.start.min(size_bytes);
        let end = range.end.clamp(start, size_bytes);
        let mut bytes = Vec::with_capacity((end - start) as usize);
        file.seek(SeekFrom::Start(start)).map_err(|error| io_error(error, name))?;
        file.take(end - start).read_to_end(&mut bytes).map_err(|error| io_error(error, name))?;
        Ok(bytes)
    }

    fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage, StoreError> {
        if limit == 0 {
            return Err(StoreError::permanent("list limit must be at least 1"));
        }
        let mut walk = ListWalk {
            prefix,
            start_after,
            wanted: limit.min(LIST_LIMIT_MAX) + 1,
            names: Vec::new(),
            sizes: Vec::new(),
        };
        walk.directory(&self.root, "").map_err(|error| io_error(error, prefix))?;
        let truncated = walk.names.len() > limit.min(LIST_LIMIT_MAX);
        walk.names.truncate(limit.min(LIST_LIMIT_MAX));
        walk.sizes.truncate(limit.min(LIST_LIMIT_MAX));
        Ok(ListPage { names: walk.names, sizes: walk.sizes, truncated })
    }

    fn delete(&self, names: &[String]) -> Result<(), StoreError> {
        // A replay must never bring back a deleted object.
        if let Some(journal) = &self.journal {
            journal.checkpoint().map_err(|error| io_error(error, "(checkpoint before delete)"))?;
        }
        let mut directories: Vec<PathBuf> = Vec::new();
        for name in names {
            validate_name(name)?;
            let path = self.root.join(name);
            match fs::remove_file(&path) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(io_error(error, name)),
                _ => directories.push(path.parent().unwrap_or(&self.root).to_path_buf()),
            }
        }
        if self.sync {
            directories.sort();
            directories.dedup();
            for directory in &directories {
                sync_directory(directory).map_err(|error| io_error(error, "(delete)"))?;
            }
        }
        Ok(())
    }
}

/// A depth-first walk in name order that stops once it has `wanted` names.
struct ListWalk<'a> {
    prefix: &'a str,
    start_after: Option<&'a str>,
    wanted: usize,
    names: Vec<String>,
    sizes: Vec<u64>,
}

impl ListWalk<'_> {
    fn directory(&mut self, path: &Path, name_prefix: &str) -> io::Result<()> {
        let mut entries = match sorted_entries(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        };
        for (key, is_directory) in entries.drain(..) {
            if self.names.len() >= self.wanted {
                break;
            }
            let full = format!("{name_prefix}{key}");
            if !is_directory {
                self.file(full, &path.join(&key));
            } else if self.may_hold_matches(&full) {
                self.directory(&path.join(key.trim_end_matches('/')), &full)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, name: String, path: &Path) {
        let after_start = self.start_after.is_none_or(|start_after| name.as_str() > start_after);
        if after_start && name.starts_with(self.prefix) {
            // A file removed since the directory was read has size 0 here;
            // sizes are for accounting, never for reading.
            self.sizes.push(fs::metadata(path).map_or(0, |metadata| metadata.len()));
            self.names.push(name);
        }
    }

    /// Whether a directory whose names all start with `directory` (ending in
    /// `/`) can hold a name that matches the prefix and follows
    /// `start_after`.
    fn may_hold_matches(&self, directory: &str) -> bool {
        let prefix_overlaps = directory.starts_with(self.prefix) || self.prefix.starts_with(directory);
        let all_before_start =
            self.start_after.is_some_and(|start_after| start_after > directory && !start_after.starts_with(directory));
        prefix_overlaps && !all_before_start
    }
}

/// A directory's entries as (sort key, is directory), in the byte order of
/// the names they stand for: a directory's key is its name followed by `/`.
/// Entries starting with `.` and names that are not UTF-8 are skipped.
fn sorted_entries(path: &Path) -> io::Result<Vec<(String, bool)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let is_directory = entry.file_type()?.is_dir();
        entries.push(if is_directory { (format!("{name}/"), true) } else { (name, false) });
    }
    entries.sort_unstable();
    Ok(entries)
}

/// Written for the journal and not yet durable on its own.
fn is_marked(metadata: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.is_file() && metadata.permissions().mode() & journal::MARK != 0
}

/// Unmarks an object written for the journal, then syncs it and its
/// directory (so the unmarking is durable with it).
fn make_durable(path: &Path, parent: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(journal::PLAIN_MODE))?;
    File::open(path)?.sync_all()?;
    sync_directory(parent)
}

fn sync_directory(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Whether unnamed files can be made in `temp_directory`, linked from there
/// and, for the journal, keep the mark (`journal::MARK`): one is made and
/// linked under a probe name, which is removed again.
fn unnamed_files_work(temp_directory: &Path, temp_tag: &str, for_journal: bool) -> bool {
    let probe = temp_directory.join(format!("{temp_tag}-unnamed-probe"));
    let works = crate::ops::sys::create_unnamed(temp_directory, Disk::mode(for_journal))
        .and_then(|file| crate::ops::sys::link_unnamed(&file, &probe))
        .and_then(|()| fs::metadata(&probe))
        .is_ok_and(|metadata| is_marked(&metadata) == for_journal);
    let _ = fs::remove_file(&probe);
    works
}

/// Best effort: a temporary file this old belongs to no live put.
fn remove_stale_temp_files(temp_directory: &Path) {
    let Ok(entries) = fs::read_dir(temp_directory) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let modified = entry.metadata().and_then(|metadata| metadata.modified());
        let stale = modified.is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() > STALE_TEMP_AGE);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Maps an IO error to the store's error kinds: missing is `NotFound`,
/// existing is `AlreadyExists`, errors that retrying cannot fix are
/// `Permanent`, the rest (including a full disk) `Transient`.
fn io_error(error: io::Error, name: &str) -> StoreError {
    use io::ErrorKind as Kind;
    match error.kind() {
        Kind::NotFound => StoreError::NotFound { name: name.to_owned() },
        Kind::AlreadyExists => StoreError::AlreadyExists { name: name.to_owned() },
        Kind::PermissionDenied
        | Kind::ReadOnlyFilesystem
        | Kind::NotADirectory
        | Kind::IsADirectory
        | Kind::InvalidInput
        | Kind::Unsupported
        | Kind::InvalidFilename => StoreError::permanent(format!("{name:?}: {error}")),
        _ => StoreError::transient(format!("{name:?}: {error}")),
    }
}

#[cfg(test)]
mod tests;
