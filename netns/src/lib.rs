//! Entering a network namespace, the one way the lab, the enforcer and the test harness do it.
//! A socket, a netlink connection or a TC link belongs to the namespace of the thread that
//! creates it, so code that must act "inside" a namespace runs on a thread that entered it.
//!
//! Why not netns-rs: its `NetNs::run` switches the *calling* thread and switches it back
//! afterwards. That thread may be a tokio worker shared with other tasks; if the closure panics,
//! or switching back fails, the thread stays in the wrong namespace and everything later
//! scheduled on it silently acts there. [`run_in`] instead uses a fresh scoped thread that ends
//! with the closure, so the caller's thread never changes and there is nothing to restore. It
//! also keeps the namespace's path in its errors and needs no second `nix`/`thiserror` version.
//!
//! Not here: entering a pod's namespaces in a forked child before `exec` (`lab::spawn`), where
//! only async-signal-safe raw system calls are allowed.

use std::{fs::File, io, os::fd::AsFd, path::Path};

use nix::sched::{CloneFlags, setns};

/// Runs `f` on a scoped thread that has entered the network namespace at `path` (a named one
/// under `/run/netns`, or any namespace file such as `/proc/PID/ns/net`), and returns its result.
/// Threads `f` spawns start in that namespace too. Errors name the namespace.
pub fn run_in<R: Send>(path: &Path, f: impl FnOnce() -> R + Send) -> io::Result<R> {
    let file = File::open(path).map_err(|e| with_path(e, "opening", path))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            enter(&file).map_err(|e| with_path(e, "entering", path))?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other(format!("thread in {} panicked", path.display())))?
    })
}

/// Moves the current thread into the network namespace `ns` for the rest of its life. Only for
/// threads made for that namespace (e.g. a runtime's worker threads); otherwise use [`run_in`].
pub fn enter(ns: impl AsFd) -> io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt};

    use super::*;

    /// The inode of the calling thread's network namespace.
    fn current() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("own namespace")
            .ino()
    }

    #[test]
    fn runs_in_the_given_namespace_and_leaves_the_caller_where_it_was() {
        // A fresh namespace (needs root), kept alive by the open file once its thread is gone.
        let fresh = std::thread::spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare (run as root)");
            File::open("/proc/thread-self/ns/net").expect("new namespace")
        })
        .join()
        .unwrap();
        let path = format!("/proc/self/fd/{}", fresh.as_raw_fd());
        let before = current();
        let (inside, in_child) = run_in(Path::new(&path), || {
            (current(), std::thread::spawn(current).join().unwrap())
        })
        .unwrap();
        assert_eq!(inside, fresh.metadata().unwrap().ino());
        assert_ne!(inside, before);
        assert_eq!(in_child, inside, "threads spawned inside start there too");
        assert_eq!(current(), before);
    }

    #[test]
    fn errors_name_the_namespace() {
        let e = run_in(Path::new("/run/netns/no-such-namespace-here"), || ()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with("opening /run/netns/no-such-namespace-here: ")
        );
        let e = run_in(Path::new("/proc/self/ns/net"), || panic!("boom")).unwrap_err();
        assert_eq!(e.to_string(), "thread in /proc/self/ns/net panicked");
    }
}
