//! Start-up check that the configured storage can be written, retried with
//! backoff until it can; readiness (`/readyz`) follows its result.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::StorageUrl;
use crate::pipeline::published::Published;

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Checks the storage in a background thread and marks the server ready once
/// it works. Returns an error only for storage kinds this build cannot use.
pub fn start(storage: &StorageUrl, published: Arc<Published>) -> Result<(), String> {
    let directory = match storage {
        StorageUrl::File(directory) => directory.clone(),
        StorageUrl::S3 { .. } => {
            return Err("storage.url: s3:// storage is not available yet in this build; use file:DIR".into());
        }
    };
    std::thread::Builder::new()
        .name("stoat-storage-probe".into())
        .spawn(move || probe_until_writable(&directory, &published))
        .map(|_| ())
        .map_err(|error| format!("cannot start the storage probe: {error}"))
}

fn probe_until_writable(directory: &Path, published: &Published) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        match probe(directory) {
            Ok(()) => {
                published.set_ready(true);
                tracing::info!(directory = %directory.display(), "storage is writable");
                return;
            }
            Err(error) => {
                tracing::warn!(directory = %directory.display(), %error, retry_in_ms = backoff.as_millis() as u64, "storage is not writable");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Creates the directory and writes, syncs and removes a file in it.
fn probe(directory: &Path) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(directory)?;
    let path: PathBuf = directory.join(format!(".probe-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"stoat")?;
    file.sync_all()?;
    std::fs::remove_file(&path)
}
