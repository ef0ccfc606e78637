//! The few operating-system calls the harness needs and the standard library lacks.
//!
//! Every `unsafe` block of the crate lives here, each with the reason it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child started by `cmd` receive `SIGKILL` when the thread that spawns it exits
/// (`PR_SET_PDEATHSIG`), so a test process that dies never leaves a registry behind.
///
/// The spawning thread must live as long as the process: see `registry::process`.
pub(crate) fn kill_child_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before `exec`. It calls only
    // async-signal-safe functions (`prctl`, `getppid`) and allocates nothing: the error
    // it may return is built from a raw OS error code.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends `SIGKILL` to every process of the process group `pgid`.
pub(crate) fn kill_process_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Sets `SO_LINGER` to zero on the socket `fd`, so that closing it sends a TCP RST.
///
/// The caller guarantees that `fd` is an open socket for the duration of the call.
pub(crate) fn set_zero_linger(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid `struct linger` that outlives the call, and its size is
    // passed alongside it. An invalid `fd` makes the call fail with EBADF, nothing worse.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How many bytes written to the TCP socket `fd` the peer has not acknowledged yet
/// (`SIOCOUTQ`).
pub(crate) fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one `int` through the pointer, which points at
    // a live local `c_int`. An invalid `fd` makes the call fail with EBADF.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc == 0 {
        Ok(usize::try_from(n).unwrap_or(0))
    } else {
        Err(io::Error::last_os_error())
    }
}
