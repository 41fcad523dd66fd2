//! Buckets, objects and multipart uploads, in memory or on disk.
//!
//! One mutex guards the index (buckets, their keys in byte order, uploads).
//! Everything slow happens outside it: hashing, and on disk the writing and
//! syncing of a temporary file. Inside it happen only the decisions and
//! the step that makes a write visible (an insert, or a rename over the
//! object's file). That is the exclusivity argument for conditional
//! writes: the check of `If-None-Match: *` / `If-Match` and the commit of
//! the write are one critical section, so of N racing conditional writers
//! exactly one can see the precondition hold.
//!
//! Invariants:
//! - An object is visible whole or not at all: in memory by a single
//!   insert, on disk by `rename` of a complete, synced temporary file.
//! - Bytes read from disk are checked (length and CRC32C) before use.
//! - The index and the files agree: the index is rebuilt from the files at
//!   start, and changed only after the file operation succeeded.

mod disk;
pub mod listing;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::checksum::{self, Checksum};
use crate::error::S3Error;
use crate::faults::SplitMix64;
use crate::time::now_ms;
pub use disk::Disk;
pub use listing::{Listing, ListingQuery};

/// Everything known about an object besides its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Without quotes: the MD5 in hex, or `<md5 of md5s>-N` for multipart.
    pub etag: String,
    pub last_modified_ms: u64,
    pub content_type: Option<String>,
    /// Stored response headers: cache-control, content-disposition, ...
    pub headers: Vec<(String, String)>,
    /// User metadata (`x-amz-meta-` stripped, lowercase names).
    pub metadata: Vec<(String, String)>,
    pub checksum: Option<Checksum>,
    pub parts_count: Option<u32>,
    /// CRC32C of the bytes, checked on every read from disk.
    pub crc32c: u32,
}

/// The parts of a new object that the request decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewObject {
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub metadata: Vec<(String, String)>,
    pub checksum: Option<Checksum>,
}

/// The preconditions of a conditional write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteCondition {
    /// `If-None-Match: *`: only if no object has the key.
    pub if_none_match_any: bool,
    /// `If-Match: "etag"`: only if the object exists with this ETag.
    pub if_match: Option<String>,
}

/// Decides a conditional write against the object now under the key.
pub fn check_write(existing: Option<&ObjectMeta>, condition: &WriteCondition) -> Result<(), S3Error> {
    if condition.if_none_match_any && existing.is_some() {
        return Err(S3Error::PreconditionFailed { condition: "If-None-Match" });
    }
    if let Some(expected) = &condition.if_match {
        match existing {
            None => return Err(S3Error::NoSuchKey { key: String::new() }),
            Some(meta) if !etag_matches(expected, &meta.etag) => {
                return Err(S3Error::PreconditionFailed { condition: "If-Match" })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether an `If-Match`/`If-None-Match` list matches an ETag: `*`, or
/// any of the comma-separated (quoted, possibly weak) tags.
pub fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag.trim_matches('"') == etag
    })
}

/// The bytes of an object, shared with whoever is sending them.
pub type Data = Arc<Vec<u8>>;

#[derive(Debug)]
struct Object {
    meta: Arc<ObjectMeta>,
    /// In memory mode, the bytes; on disk they are in the object's file.
    data: Option<Data>,
}

#[derive(Debug)]
struct Bucket {
    created_ms: u64,
    objects: BTreeMap<String, Object>,
}

#[derive(Debug, Clone)]
pub struct Part {
    pub number: u32,
    pub data: Data,
    pub md5: [u8; 16],
    pub last_modified_ms: u64,
    pub checksum: Option<Checksum>,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    template: NewObject,
    initiated_ms: u64,
    parts: BTreeMap<u32, Part>,
}

/// An upload in progress, as ListMultipartUploads shows it.
#[derive(Debug, Clone)]
pub struct UploadSummary {
    pub upload_id: String,
    pub key: String,
    pub initiated_ms: u64,
}

#[derive(Debug)]
struct State {
    buckets: BTreeMap<String, Bucket>,
    uploads: HashMap<String, Upload>,
    random: SplitMix64,
}

/// The store: an index under one mutex, and optionally a directory.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    disk: Option<Disk>,
    /// Every part of a multipart upload but the last must be this large.
    pub min_part_bytes: u64,
}

impl Store {
    pub fn in_memory(min_part_bytes: u64) -> Store {
        Store { state: Mutex::new(State::new()), disk: None, min_part_bytes }
    }

    /// Opens (creating if needed) a data directory and loads its index.
    pub fn on_disk(root: &Path, min_part_bytes: u64) -> std::io::Result<Store> {
        let (disk, buckets) = Disk::open(root)?;
        let mut state = State::new();
        for (name, created_ms, metas) in buckets {
            let objects =
                metas.into_iter().map(|meta| (meta.key.clone(), Object { meta: Arc::new(meta), data: None })).collect();
            state.buckets.insert(name, Bucket { created_ms, objects });
        }
        Ok(Store { state: Mutex::new(state), disk: Some(disk), min_part_bytes })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing below panics while holding the lock on client input; if
        // something else did, the index is still consistent (every change
        // is a single insert or remove), so keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn create_bucket(&self, name: &str) -> Result<(), S3Error> {
        let mut state = self.lock();
        if state.buckets.contains_key(name) {
            return Err(S3Error::BucketAlreadyOwnedByYou { bucket: name.to_string() });
        }
        let created_ms = now_ms();
        if let Some(disk) = &self.disk {
            disk.create_bucket(name, created_ms).map_err(internal)?;
        }
        state.buckets.insert(name.to_string(), Bucket { created_ms, objects: BTreeMap::new() });
        Ok(())
    }

    pub fn bucket_exists(&self, name: &str) -> bool {
        self.lock().buckets.contains_key(name)
    }

    pub fn delete_bucket(&self, name: &str) -> Result<(), S3Error> {
        let mut state = self.lock();
        let bucket = state.buckets.get(name).ok_or_else(|| no_such_bucket(name))?;
        if !bucket.objects.is_empty() {
            return Err(S3Error::BucketNotEmpty { bucket: name.to_string() });
        }
        if let Some(disk) = &self.disk {
            disk.delete_bucket(name).map_err(internal)?;
        }
        state.buckets.remove(name);
        state.uploads.retain(|_, upload| upload.bucket != name);
        Ok(())
    }

    /// Bucket names and creation times, by name.
    pub fn list_buckets(&self) -> Vec<(String, u64)> {
        self.lock().buckets.iter().map(|(name, bucket)| (name.clone(), bucket.created_ms)).collect()
    }

    /// Stores an object if `condition` holds when it would become visible.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: Vec<u8>,
        new: NewObject,
        condition: &WriteCondition,
    ) -> Result<Arc<ObjectMeta>, S3Error> {
        let etag = checksum::md5_hex(&data);
        self.commit(bucket, key, data, new, etag, None, condition)
    }

    /// The one path by which objects are written.
    fn commit(
        &self,
        bucket: &str,
        key: &str,
        data: Vec<u8>,
        new: NewObject,
        etag: String,
        parts_count: Option<u32>,
        condition: &WriteCondition,
    ) -> Result<Arc<ObjectMeta>, S3Error> {
        let meta = Arc::new(ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            etag,
            last_modified_ms: now_ms(),
            content_type: new.content_type,
            headers: new.headers,
            metadata: new.metadata,
            checksum: new.checksum,
            parts_count,
            crc32c: crc32c::crc32c(&data),
        });
        // On disk the file is written and synced before the lock is taken.
        let staged = match &self.disk {
            Some(disk) => Some(disk.stage(&meta, &data).map_err(internal)?),
            None => None,
        };
        let mut state = self.lock();
        let decided = state
            .buckets
            .get(bucket)
            .ok_or_else(|| no_such_bucket(bucket))
            .and_then(|b| check_write(b.objects.get(key).map(|o| &*o.meta), condition));
        if let Err(error) = decided {
            drop(state);
            if let Some(staged) = staged {
                staged.discard();
            }
            return Err(fill_key(error, key));
        }
        let data = match (staged, &self.disk) {
            (Some(staged), Some(disk)) => {
                disk.publish(staged, bucket, key).map_err(internal)?;
                None
            }
            _ => Some(Arc::new(data)),
        };
        if let Some(b) = state.buckets.get_mut(bucket) {
            b.objects.insert(key.to_string(), Object { meta: meta.clone(), data });
        }
        Ok(meta)
    }

    /// An object's metadata, and its bytes when `with_data`.
    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        with_data: bool,
    ) -> Result<(Arc<ObjectMeta>, Option<Data>), S3Error> {
        let state = self.lock();
        let b = state.buckets.get(bucket).ok_or_else(|| no_such_bucket(bucket))?;
        let object = b.objects.get(key).ok_or_else(|| S3Error::NoSuchKey { key: key.to_string() })?;
        let (Some(disk), None) = (&self.disk, &object.data) else {
            return Ok((object.meta.clone(), if with_data { object.data.clone() } else { None }));
        };
        let meta = object.meta.clone();
        drop(state);
        if !with_data {
            return Ok((meta, None));
        }
        // Read outside the lock. A write that lands meanwhile replaces the
        // file whole; the file carries its own metadata, so what is read
        // is always one consistent version (possibly the newer one).
        match disk.read(bucket, key) {
            Ok(Some((meta, data))) => Ok((Arc::new(meta), Some(Arc::new(data)))),
            Ok(None) => Err(S3Error::NoSuchKey { key: key.to_string() }),
            Err(error) => Err(internal(error)),
        }
    }

    /// Removes an object; a missing key is not an error (S3 answers 204).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        let mut state = self.lock();
        let b = state.buckets.get_mut(bucket).ok_or_else(|| no_such_bucket(bucket))?;
        if b.objects.contains_key(key) {
            if let Some(disk) = &self.disk {
                disk.remove(bucket, key).map_err(internal)?;
            }
            b.objects.remove(key);
        }
        Ok(())
    }

    pub fn list_objects(&self, bucket: &str, query: &ListingQuery<'_>) -> Result<Listing, S3Error> {
        let state = self.lock();
        let b = state.buckets.get(bucket).ok_or_else(|| no_such_bucket(bucket))?;
        // Start at the later of the marker and the prefix, not at the first key.
        let start = match query.after {
            Some(after) if after >= query.prefix => Bound::Excluded(after),
            _ => Bound::Included(query.prefix),
        };
        let entries = b.objects.range::<str, _>((start, Bound::Unbounded));
        Ok(listing::list(entries.map(|(key, object)| (key.as_str(), &object.meta)), query))
    }

    pub fn create_upload(&self, bucket: &str, key: &str, template: NewObject) -> Result<String, S3Error> {
        let mut state = self.lock();
        if !state.buckets.contains_key(bucket) {
            return Err(no_such_bucket(bucket));
        }
        let upload_id = format!("{:016x}{:016x}", state.random.next_u64(), state.random.next_u64());
        let upload = Upload {
            bucket: bucket.to_string(),
            key: key.to_string(),
            template,
            initiated_ms: now_ms(),
            parts: BTreeMap::new(),
        };
        state.uploads.insert(upload_id.clone(), upload);
        Ok(upload_id)
    }

    fn upload_mut<'a>(state: &'a mut State, id: &str, bucket: &str, key: &str) -> Result<&'a mut Upload, S3Error> {
        if !state.buckets.contains_key(bucket) {
            return Err(no_such_bucket(bucket));
        }
        state.uploads.get_mut(id).filter(|u| u.bucket == bucket && u.key == key).ok_or(S3Error::NoSuchUpload)
    }

    /// Stores a part (replacing one with the same number); returns its MD5.
    pub fn upload_part(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        number: u32,
        data: Vec<u8>,
        checksum: Option<Checksum>,
    ) -> Result<[u8; 16], S3Error> {
        let md5 = checksum::md5(&data);
        let part = Part { number, data: Arc::new(data), md5, last_modified_ms: now_ms(), checksum };
        let mut state = self.lock();
        Self::upload_mut(&mut state, id, bucket, key)?.parts.insert(number, part);
        Ok(md5)
    }

    pub fn list_parts(&self, id: &str, bucket: &str, key: &str) -> Result<Vec<Part>, S3Error> {
        let mut state = self.lock();
        Ok(Self::upload_mut(&mut state, id, bucket, key)?.parts.values().cloned().collect())
    }

    pub fn list_uploads(&self, bucket: &str) -> Result<Vec<UploadSummary>, S3Error> {
        let state = self.lock();
        if !state.buckets.contains_key(bucket) {
            return Err(no_such_bucket(bucket));
        }
        let mut uploads: Vec<UploadSummary> = state
            .uploads
            .iter()
            .filter(|(_, upload)| upload.bucket == bucket)
            .map(|(id, upload)| UploadSummary {
                upload_id: id.clone(),
                key: upload.key.clone(),
                initiated_ms: upload.initiated_ms,
            })
            .collect();
        uploads.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
        Ok(uploads)
    }

    pub fn abort_upload(&self, id: &str, bucket: &str, key: &str) -> Result<(), S3Error> {
        let mut state = self.lock();
        Self::upload_mut(&mut state, id, bucket, key)?;
        state.uploads.remove(id);
        Ok(())
    }

    /// Completes an upload from the listed parts `(number, etag)`.
    pub fn complete_upload(
        &self,
        id: &str,
        bucket: &str,
        key: &str,
        listed: &[(u32, String)],
        condition: &WriteCondition,
    ) -> Result<Arc<ObjectMeta>, S3Error> {
        let (parts, template) = {
            let mut state = self.lock();
            let upload = Self::upload_mut(&mut state, id, bucket, key)?;
            let parts = self.choose_parts(upload, listed)?;
            (parts, upload.template.clone())
        };
        let total: usize = parts.iter().map(|part| part.data.len()).sum();
        let mut data = Vec::with_capacity(total);
        for part in &parts {
            data.extend_from_slice(&part.data);
        }
        let md5s: Vec<[u8; 16]> = parts.iter().map(|part| part.md5).collect();
        let etag = checksum::multipart_etag(&md5s);
        let new = NewObject { checksum: None, ..template };
        let meta = self.commit(bucket, key, data, new, etag, Some(parts.len() as u32), condition)?;
        self.lock().uploads.remove(id);
        Ok(meta)
    }

    fn choose_parts(&self, upload: &Upload, listed: &[(u32, String)]) -> Result<Vec<Part>, S3Error> {
        if listed.is_empty() {
            return Err(S3Error::MalformedXml);
        }
        if listed.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
            return Err(S3Error::InvalidPartOrder);
        }
        let mut parts = Vec::with_capacity(listed.len());
        for (index, (number, etag)) in listed.iter().enumerate() {
            let part = upload.parts.get(number).ok_or(S3Error::InvalidPart)?;
            if etag.trim().trim_matches('"') != hex::encode(part.md5) {
                return Err(S3Error::InvalidPart);
            }
            if index + 1 < listed.len() && (part.data.len() as u64) < self.min_part_bytes {
                return Err(S3Error::EntityTooSmall);
            }
            parts.push(part.clone());
        }
        Ok(parts)
    }
}

impl State {
    fn new() -> State {
        State { buckets: BTreeMap::new(), uploads: HashMap::new(), random: SplitMix64::new(now_ms() ^ 0x5EED) }
    }
}

fn no_such_bucket(bucket: &str) -> S3Error {
    S3Error::NoSuchBucket { bucket: bucket.to_string() }
}

fn internal(error: impl std::fmt::Display) -> S3Error {
    S3Error::InternalError(error.to_string())
}

/// `check_write` does not know the key; fill it in for NoSuchKey.
fn fill_key(error: S3Error, key: &str) -> S3Error {
    match error {
        S3Error::NoSuchKey { .. } => S3Error::NoSuchKey { key: key.to_string() },
        other => other,
    }
}

#[cfg(test)]
mod tests;
