//! Running code inside another network namespace: a scoped thread enters it, so sockets and
//! kernel objects it creates (netlink, TC links by ifindex) belong there.

use std::{fs::File, io, os::fd::AsFd, path::Path};

/// Runs `f` on a scoped thread that has entered the network namespace at `path`.
pub fn run_in<R: Send>(path: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let file = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("thread in network namespace panicked"))?
    })
}
