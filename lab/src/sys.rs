//! Thin wrappers over the kernel facilities the lab builds pods from: named network namespaces,
//! sysctls inside a namespace, mounts (bpffs, cgroup2) and cgroups. Everything here is exact:
//! it creates or removes one named thing and reports what went wrong.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, unshare},
};

pub const NETNS_DIR: &str = "/run/netns";

/// Makes /run/netns a shared mount of its own, as `ip netns add` does: then a process can let
/// go of every namespace handle below it at once (pods do, see `spawn`), and `ip netns` finds
/// the layout it expects.
fn ensure_netns_dir_is_a_mount() -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(NETNS_DIR))
    {
        return Ok(());
    }
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {NETNS_DIR} onto itself"))?;
    mount(
        None::<&str>,
        NETNS_DIR,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("making {NETNS_DIR} a shared mount"))
}

/// Path of a named network namespace (as `ip netns` names them).
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates a named network namespace, visible to `ip netns list`.
pub fn create_netns(name: &str) -> Result<PathBuf> {
    fs::create_dir_all(NETNS_DIR).with_context(|| format!("creating {NETNS_DIR}"))?;
    ensure_netns_dir_is_a_mount()?;
    let path = netns_path(name);
    if path.exists() {
        bail!(
            "network namespace {name} already exists ({}); a previous lab may still be up \
             (`lab down`), or remove it with `ip netns del {name}`",
            path.display()
        );
    }
    fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let target = path.clone();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("bind-mounting the new namespace")?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?;
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(e.context(format!("creating network namespace {name}")));
    }
    Ok(path)
}

/// Removes a named network namespace; absent is fine.
pub fn delete_netns(name: &str) -> Result<()> {
    let path = netns_path(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {}", path.display())),
    }
    fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Whether a named namespace is still a live namespace (not just a leftover file).
pub fn netns_alive(name: &str) -> bool {
    let path = netns_path(name);
    let Ok(ns) = nix::sys::statfs::statfs(&path) else {
        return false;
    };
    // A bind-mounted namespace file lives on nsfs.
    ns.filesystem_type() == nix::sys::statfs::NSFS_MAGIC
}

/// Sets a sysctl (`net.ipv4.ip_forward` style key) inside a network namespace.
pub fn sysctl(ns: &Path, key: &str, value: &str) -> Result<()> {
    let file = Path::new("/proc/sys").join(key.replace('.', "/"));
    netns::run_in(ns, || -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .with_context(|| format!("opening {}", file.display()))?;
        f.write_all(value.as_bytes())
            .with_context(|| format!("setting {key}={value}"))
    })?
}

/// Whether `path` is a mount point of the given filesystem type magic.
fn is_mount_of(path: &Path, magic: nix::sys::statfs::FsType) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == magic)
        && is_mount_point(path)
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let p = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&p))
}

/// Mounts a bpffs at `path` (created if needed) unless one is there already.
pub fn mount_bpffs(path: &Path) -> Result<()> {
    mount_once(
        path,
        "bpf",
        nix::sys::statfs::BPF_FS_MAGIC,
        "bpffs",
        "is BPF enabled in the kernel?",
    )
}

/// Mounts the cgroup v2 hierarchy at `path` unless it is mounted there already.
pub fn mount_cgroup2(path: &Path) -> Result<()> {
    mount_once(
        path,
        "cgroup2",
        nix::sys::statfs::CGROUP2_SUPER_MAGIC,
        "cgroup2",
        "the kernel needs cgroup v2 support",
    )
}

/// Mounts a filesystem of type `fstype` at `path` (created if needed) unless one is there.
fn mount_once(
    path: &Path,
    fstype: &str,
    magic: nix::sys::statfs::FsType,
    what: &str,
    hint: &str,
) -> Result<()> {
    fs::create_dir_all(path)?;
    if is_mount_of(path, magic) {
        return Ok(());
    }
    mount(
        Some(fstype),
        path,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {what} at {} ({hint})", path.display()))
}

/// Unmounts `path` if it is a mount point, then removes the (empty) directory.
pub fn unmount(path: &Path) -> Result<()> {
    if is_mount_point(path) {
        umount2(path, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", path.display()))?;
    }
    match fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// Kills every process in a cgroup (v2 `cgroup.kill`) and waits until it is empty.
pub fn kill_cgroup(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let kill = path.join("cgroup.kill");
    if kill.exists() {
        fs::write(&kill, "1").with_context(|| format!("writing {}", kill.display()))?;
    }
    // `populated 0` once every process (of this cgroup and below) has exited; a loaded machine
    // can take a while to run the exits.
    let events = path.join("cgroup.events");
    for _ in 0..1000 {
        match fs::read_to_string(&events) {
            Ok(s) if s.lines().any(|l| l == "populated 0") => return Ok(()),
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(_) => return Ok(()),
        }
    }
    bail!("processes in {} did not exit within 10 s", path.display())
}

/// Kills every process in a cgroup, then removes it (children first).
pub fn remove_cgroup(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    kill_cgroup(path)?;
    // Child cgroups first.
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path())?;
            }
        }
    }
    // The kernel may still be finishing the exits of the last processes: retry briefly.
    for attempt in 0.. {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 100 => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("removing cgroup {}", path.display())),
        }
    }
    unreachable!()
}
