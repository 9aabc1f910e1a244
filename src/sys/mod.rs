//! The few system calls that the standard library does not offer, each behind a
//! safe function: the open-file limit, swapping two files atomically, starting
//! a child in a session of its own, early writeback of a large file, and a hint
//! to the CPU's cache.

use std::io;
use std::path::Path;

/// Starts writing `len` bytes of `file` from `offset` to the disk without waiting
/// (`sync_file_range`), so that the `fsync` that ends a large write waits for
/// little. Only a hint: where the system has no such call, nothing happens.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a plain call on an open descriptor; it touches no memory of
        // ours, and its result is only a hint.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Asks the CPU to bring the memory of `value` into the cache without waiting
/// for it: the lines of its first and last bytes. Only a hint: it reads nothing
/// and cannot fault.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = (value as *const T).cast::<i8>();
        let last = first.wrapping_add(std::mem::size_of_val(value).saturating_sub(1));
        // SAFETY: a prefetch reads no memory and never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Raises the process's soft limit of open files toward the hard one (cron and
/// systemd start a process at 1,024 under a hard limit of thousands), at most to
/// `cap`; returns the soft limit now in force, or 1,024 when it cannot be read.
pub fn raise_open_file_limit(cap: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let wanted = limit.rlim_cur.max(limit.rlim_max.min(cap as libc::rlim_t));
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; a soft limit up to the
        // hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return wanted;
        }
    }
    limit.rlim_cur
}

/// Swaps the files at `a` and `b` in one step (Linux `renameat2` with
/// `RENAME_EXCHANGE`): afterwards `b` holds what `a` held and `a` what `b` held,
/// and no reader ever finds neither. `Unsupported` where the file system or the
/// system cannot.
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let ca = CString::new(a.as_os_str().as_bytes())?;
        let cb = CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings that live across
        // the call; the syscall reads them and touches no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                ca.as_ptr(),
                libc::AT_FDCWD,
                cb.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                io::Error::new(io::ErrorKind::Unsupported, e)
            }
            _ => e,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no atomic exchange of files here",
        ))
    }
}

/// Makes `command` start its child in a session of its own: a process group that
/// [`kill_group`] ends whole (ssh and the helpers git starts included), and no
/// controlling terminal, so nothing it runs can stop to ask for a password.
/// Out of this process's group, the child would miss a Ctrl-C or a kill of this
/// process: on Linux it is killed when the thread that started it ends.
pub fn detach(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // setsid and prctl, which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Kills the process group that a child started with [`detach`] leads.
pub fn kill_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill takes plain integers; a group that is gone gives ESRCH.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Bounds the data segment of the child that `command` starts: a server that
/// makes git allocate without end (an endless list of refs, a delta that claims
/// gigabytes) ends that git, not the machine.
pub fn limit_memory(command: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // setrlimit, which is async-signal-safe, on a struct copied into it.
    unsafe {
        command.pre_exec(move || {
            libc::setrlimit(libc::RLIMIT_DATA, &limit);
            Ok(())
        });
    }
}

/// Makes every file and folder that this process and its children create
/// private to the user (0600, 0700), whatever umask it was started with: the
/// repository's config may hold a URL with a token, and its files are the
/// user's memory. Files whose mode is chosen on purpose set it explicitly.
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Whether the standard error stream is a terminal (for progress lines).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_swaps_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "A").unwrap();
        std::fs::write(&b, "B").unwrap();
        match exchange(&a, &b) {
            Ok(()) => {
                assert_eq!(std::fs::read_to_string(&a).unwrap(), "B");
                assert_eq!(std::fs::read_to_string(&b).unwrap(), "A");
            }
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::Unsupported),
        }
    }

    #[test]
    fn the_open_file_limit_never_goes_down() {
        let before = raise_open_file_limit(0);
        assert!(raise_open_file_limit(8192) >= before);
    }
}
