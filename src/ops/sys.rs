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

/// Creates a file with no name in `directory` (`O_TMPFILE`, Linux): it
/// vanishes when closed, or at a crash, unless `link_unnamed` gives it one.
/// `Unsupported` elsewhere; filesystems without it fail with an OS error.
pub fn create_unnamed(directory: &std::path::Path, mode: u32) -> std::io::Result<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::File::options().write(true).custom_flags(libc::O_TMPFILE).mode(mode).open(directory)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (directory, mode);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// Gives a file made by `create_unnamed` the name `path` (on the same
/// filesystem), failing with `AlreadyExists` if the name is taken: `linkat`
/// of `/proc/self/fd/N`, which needs no privilege (`AT_EMPTY_PATH` would).
pub fn link_unnamed(file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::io::AsRawFd;
        let from = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        let to = std::ffi::CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: both pointers are NUL-terminated strings that outlive the
        // call; `file` keeps the descriptor open across it.
        let linked = unsafe {
            libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW)
        };
        if linked == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, path);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}
