//! Starting a program inside a pod: its network namespace, its cgroup (so the socket load
//! balancer and connection counting see it), its own mount namespace with the pod's
//! /etc/resolv.conf, and the pod's hostname. [`PodContext::command`] is the one way the lab
//! starts a program in a pod: workloads, `lab exec`, the page's and the API's exec, `lab bench`.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    os::{
        fd::AsRawFd,
        unix::{ffi::OsStrExt, process::CommandExt},
    },
    path::Path,
    process::Command,
};

use anyhow::{Context, Result};

use crate::paths::{LAB_ARG0, SELF_EXE};

/// Everything needed to enter a pod (served by the control API to `lab exec`).
pub use model::PodContext;

/// The file descriptors and C strings the child needs, prepared before fork: after fork only
/// async-signal-safe calls are allowed, so nothing is allocated there.
struct Prepared {
    netns: File,
    cgroup_procs: File,
    resolv_src: CString,
    resolv_dst: CString,
    root: CString,
    netns_dir: CString,
    hostname: Vec<u8>,
}

/// Starting programs inside a pod.
pub trait InPod {
    /// `program` with `args`, set to start inside this pod; stdio, waiting and time limits are
    /// the caller's (tokio callers convert it with `tokio::process::Command::from`). `lab` (or
    /// [`SELF_EXE`]) is the running lab's own program, shown as `lab` (see [`SELF_EXE`] for why).
    fn command<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command>;
}

impl InPod for PodContext {
    fn command<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Result<Command> {
        let prepared = prepare(self)?;
        let program = program.as_ref();
        let mut cmd = if program == "lab" || program == SELF_EXE {
            let mut cmd = Command::new(SELF_EXE);
            cmd.arg0(LAB_ARG0);
            cmd
        } else {
            Command::new(program)
        };
        cmd.args(args);
        // SAFETY: `enter` makes only raw system calls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || prepared.enter());
        }
        Ok(cmd)
    }
}

/// What the child needs to enter the pod, opened before the fork.
fn prepare(ctx: &PodContext) -> Result<Prepared> {
    let netns = File::open(&ctx.netns).with_context(|| {
        format!(
            "opening the network namespace of pod {}/{} ({}); is the lab up?",
            ctx.namespace,
            ctx.pod,
            ctx.netns.display()
        )
    })?;
    let procs = ctx.cgroup.join("cgroup.procs");
    let cgroup_procs = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs)
        .with_context(|| format!("opening {}", procs.display()))?;
    Ok(Prepared {
        netns,
        cgroup_procs,
        resolv_src: cstring(&ctx.resolv_conf)?,
        resolv_dst: CString::new("/etc/resolv.conf")?,
        root: CString::new("/")?,
        netns_dir: CString::new(crate::sys::NETNS_DIR)?,
        hostname: ctx.hostname.as_bytes().to_vec(),
    })
}

fn cstring(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_bytes())?)
}

impl Prepared {
    /// Runs in the forked child before exec. Only raw system calls: this is why its `setns`
    /// is not the `netns` crate's (which runs closures on threads and formats errors).
    ///
    /// # Safety
    /// Must only be called between fork and exec.
    unsafe fn enter(&self) -> std::io::Result<()> {
        unsafe {
            check(libc::setns(self.netns.as_raw_fd(), libc::CLONE_NEWNET))?;
            // Writing "0" moves the writing process into the cgroup.
            let zero = b"0";
            if libc::write(self.cgroup_procs.as_raw_fd(), zero.as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            // Keep mounts made here private to the pod, while still seeing the host's.
            check(libc::mount(
                std::ptr::null(),
                self.root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            // The pod needs no other namespace's handle: without this, every pod's mount
            // namespace would hold a copy of every pod's /run/netns mount (a million mounts
            // at a thousand pods) and each namespace removed later would be unmounted in all
            // of them. Fails harmlessly where /run/netns is no mount point.
            libc::umount2(self.netns_dir.as_ptr(), libc::MNT_DETACH);
            check(libc::mount(
                self.resolv_src.as_ptr(),
                self.resolv_dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            check(libc::sethostname(
                self.hostname.as_ptr().cast(),
                self.hostname.len(),
            ))?;
        }
        Ok(())
    }
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes a pod's resolv.conf, Kubernetes style (ClusterFirst DNS policy).
pub fn write_resolv_conf(
    path: &Path,
    namespace: &str,
    nameserver: std::net::Ipv4Addr,
) -> Result<()> {
    let domain = crate::cluster::CLUSTER_DOMAIN;
    let text = format!(
        "# written by the lab for this pod (like the kubelet's ClusterFirst DNS policy)\n\
         search {namespace}.svc.{domain} svc.{domain} {domain}\n\
         nameserver {nameserver}\n\
         options ndots:5\n"
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
