//! Platform calls that the standard library does not offer. All of the
//! crate's `unsafe` code is in this file.
#![allow(unsafe_code)]

/// Raises the soft limit on open files to the hard limit, so that
/// `server.max_connections` is not capped by a low default. Returns the soft
/// limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit that lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(limit.rlim_cur)
}

/// Syncs the whole filesystem holding `path` (`syncfs(2)`): every file and
/// directory entry written on it so far is durable when it returns.
pub fn sync_filesystem(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let directory = std::fs::File::open(path)?;
    // SAFETY: syncfs on a descriptor that `directory` owns for the call.
    if unsafe { libc::syncfs(directory.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts writing `file`'s dirty pages to the device without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, Linux): a hint that spreads
/// the work of a later sync over time. Not a durability guarantee; errors
/// are ignored (the later sync reports them).
pub fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: sync_file_range on a descriptor that `file` owns for the call.
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}
