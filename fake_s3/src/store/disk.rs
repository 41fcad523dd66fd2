//! Objects as files: `<root>/buckets/<bucket>/objects/<sha256 of key>`,
//! each file a header (magic, length, JSON metadata with the key) followed
//! by the bytes. Writes go to `<root>/tmp/` first, are synced, then renamed
//! over the object's name, so a reader or a restart sees the old version or
//! the new one, never a mix. One process at a time: `<root>/lock` is held
//! with an exclusive file lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ObjectMeta;
use crate::checksum::sha256_hex;

const MAGIC: &[u8; 8] = b"FAKES3O1";
/// A header longer than this is damage, not metadata.
const HEADER_BYTES_MAX: u32 = 16 * 1024 * 1024;
const BUCKET_MARKER: &str = ".bucket";

#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
    /// Held for the life of the store: the exclusive lock on `<root>/lock`.
    _lock: File,
}

/// A complete, synced temporary file waiting to be published.
#[derive(Debug)]
pub struct Staged(PathBuf);

impl Staged {
    pub fn discard(self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// What a data directory holds at start: per bucket, its creation time
/// and its objects' metadata.
pub type Loaded = Vec<(String, u64, Vec<ObjectMeta>)>;

impl Disk {
    pub fn open(root: &Path) -> io::Result<(Disk, Loaded)> {
        fs::create_dir_all(root.join("buckets"))?;
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(root.join("lock"))?;
        lock.try_lock().map_err(|_| {
            io::Error::new(io::ErrorKind::WouldBlock, format!("{} is in use by another fake-s3", root.display()))
        })?;
        let tmp = root.join("tmp");
        // Leftovers of writes interrupted by a crash were never visible.
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        let disk = Disk { root: root.to_path_buf(), tmp, next_tmp: AtomicU64::new(0), _lock: lock };
        let loaded = disk.load()?;
        Ok((disk, loaded))
    }

    fn load(&self) -> io::Result<Loaded> {
        let mut loaded = Vec::new();
        for entry in fs::read_dir(self.root.join("buckets"))? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Ok(marker) = fs::read_to_string(entry.path().join(BUCKET_MARKER)) else { continue };
            let created_ms = marker.trim().parse().unwrap_or(0);
            let mut metas = Vec::new();
            for object in fs::read_dir(entry.path().join("objects"))? {
                let path = object?.path();
                match read_header(&mut File::open(&path)?) {
                    Ok(meta) => metas.push(meta),
                    Err(error) => eprintln!("fake-s3: skipping damaged object file {}: {error}", path.display()),
                }
            }
            loaded.push((name, created_ms, metas));
        }
        Ok(loaded)
    }

    fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.root.join("buckets").join(bucket)
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.bucket_dir(bucket).join("objects").join(sha256_hex(key.as_bytes()))
    }

    pub fn create_bucket(&self, bucket: &str, created_ms: u64) -> io::Result<()> {
        let dir = self.bucket_dir(bucket);
        fs::create_dir_all(dir.join("objects"))?;
        let staged = self.tmp.join(format!("bucket-{}", self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        fs::write(&staged, created_ms.to_string())?;
        fs::rename(staged, dir.join(BUCKET_MARKER))
    }

    pub fn delete_bucket(&self, bucket: &str) -> io::Result<()> {
        let dir = self.bucket_dir(bucket);
        // The marker goes first: a crash after it leaves no bucket behind.
        fs::remove_file(dir.join(BUCKET_MARKER))?;
        fs::remove_dir_all(dir)
    }

    /// Writes header and bytes to a temporary file and syncs it.
    pub fn stage(&self, meta: &ObjectMeta, data: &[u8]) -> io::Result<Staged> {
        let path = self.tmp.join(format!("object-{}", self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        let header = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut file = File::create(&path)?;
        let written = (|| {
            file.write_all(MAGIC)?;
            file.write_all(&(header.len() as u32).to_le_bytes())?;
            file.write_all(&header)?;
            file.write_all(data)?;
            file.sync_data()
        })();
        match written {
            Ok(()) => Ok(Staged(path)),
            Err(error) => {
                let _ = fs::remove_file(&path);
                Err(error)
            }
        }
    }

    /// Makes a staged file the object's current version (atomic rename).
    pub fn publish(&self, staged: Staged, bucket: &str, key: &str) -> io::Result<()> {
        let renamed = fs::rename(&staged.0, self.object_path(bucket, key));
        if renamed.is_err() {
            staged.discard();
        }
        renamed
    }

    pub fn remove(&self, bucket: &str, key: &str) -> io::Result<()> {
        match fs::remove_file(self.object_path(bucket, key)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Reads and verifies an object; `None` if its file is gone.
    pub fn read(&self, bucket: &str, key: &str) -> io::Result<Option<(ObjectMeta, Vec<u8>)>> {
        let mut file = match File::open(self.object_path(bucket, key)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        let meta = read_header(&mut file)?;
        if meta.key != key {
            return Err(io::Error::other(format!("object file for {key:?} holds {:?}", meta.key)));
        }
        let mut data = Vec::with_capacity(meta.size.min(1 << 30) as usize);
        file.take(meta.size + 1).read_to_end(&mut data)?;
        if data.len() as u64 != meta.size || crc32c::crc32c(&data) != meta.crc32c {
            return Err(io::Error::other(format!("object {key:?} is damaged: length or CRC32C mismatch")));
        }
        Ok(Some((meta, data)))
    }
}

fn read_header(file: &mut File) -> io::Result<ObjectMeta> {
    let mut prefix = [0u8; 12];
    file.read_exact(&mut prefix)?;
    if &prefix[..8] != MAGIC {
        return Err(io::Error::other("not a fake-s3 object file"));
    }
    let length = u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
    if length > HEADER_BYTES_MAX {
        return Err(io::Error::other("object header too long"));
    }
    let mut header = vec![0; length as usize];
    file.read_exact(&mut header)?;
    serde_json::from_slice(&header).map_err(io::Error::other)
}
