//! `lab up` and `lab down`: checks before anything is created, the instance lock, cleanup of a
//! crashed run's leftovers, the foreground and detached modes, and serving the API and the page.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::{
    backend::LabBackend,
    client::Client,
    cluster::PodRange,
    control::Lab,
    paths::Paths,
    state::{self, Record},
    topology,
};

pub struct UpOptions {
    pub files: Vec<PathBuf>,
    pub web: SocketAddr,
    pub detach: bool,
    pub lessons: Option<PathBuf>,
    /// Set in the re-executed child of `up -d`.
    pub daemon_child: bool,
    /// Rebuild from scratch even if a previous run of the same cluster can be taken over.
    pub fresh: bool,
    /// The node's pod range (`--pod-cidr`); sized to the pods when not given.
    pub pod_cidr: Option<String>,
}

/// Checks that need nothing created: privileges, kernel features, that this lab is not
/// already running, the web port.
pub fn preflight(paths: &Paths, web: SocketAddr) -> Result<std::net::TcpListener> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!(
            "`lab up` needs root: it creates network namespaces and veth pairs and loads eBPF \
             programs (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF). Run it as root, e.g. `sudo lab up`."
        );
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for (name, what) in [
        ("bpf", "the BPF filesystem (CONFIG_BPF_SYSCALL)"),
        ("cgroup2", "cgroup v2 (CONFIG_CGROUPS)"),
    ] {
        if !fs
            .lines()
            .any(|l| l.split_whitespace().last() == Some(name))
        {
            bail!(
                "this kernel lacks {what}; the lab needs a kernel with eBPF and cgroup v2 support (Debian 12's kernel has both)"
            );
        }
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); the lab needs a kernel built with CONFIG_DEBUG_INFO_BTF (Debian 12's kernel has it)"
        );
    }
    if !Path::new("/proc/self/ns/net").exists() {
        bail!("this kernel has no network namespaces (CONFIG_NET_NS)");
    }
    // Said before the web port, which a running lab of this name holds too.
    ensure_not_running(paths)?;
    std::net::TcpListener::bind(web).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "the web address {web} is in use by another program (or another lab). Choose \
                 another with `lab up --web 127.0.0.1:{}` or stop the other program",
                web.port().wrapping_add(1)
            )
        } else {
            anyhow::anyhow!("cannot listen on {web}: {e}")
        }
    })
}

fn lock_path(paths: &Paths) -> PathBuf {
    Path::new("/run/lab").join(format!("{}.lock", paths.instance))
}

pub fn daemon_log(paths: &Paths) -> PathBuf {
    Path::new("/run/lab").join(format!("{}.log", paths.instance))
}

/// Takes the instance lock, or explains who holds it.
fn lock(paths: &Paths) -> Result<Flock<std::fs::File>> {
    std::fs::create_dir_all("/run/lab")?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(paths))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        let pid = Record::load(paths)
            .ok()
            .flatten()
            .map(|r| r.pid)
            .unwrap_or(0);
        anyhow::anyhow!(
            "a lab named {:?} is already running (pid {pid}). Use it (`lab get pods`), stop it \
             with `lab down`, or start another with `lab --instance NAME up`",
            paths.instance
        )
    })
}

/// Fails if a lab of this name holds its lock; creates nothing (a refused `up` leaves no trace).
fn ensure_not_running(paths: &Paths) -> Result<()> {
    match std::fs::File::open(lock_path(paths)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("opening {}", lock_path(paths).display())),
        Ok(_) => lock(paths).map(drop),
    }
}

/// Whether a dead run's cluster is intact enough to take over.
fn can_take_over(old: &Record) -> bool {
    old.topology.is_some()
        && !old.netns.is_empty()
        && old.netns.iter().all(|n| crate::sys::netns_alive(n))
        && !process_alive(old.pid)
}

/// Whether `pid` runs (a zombie does not: a run killed a moment ago may not be reaped yet).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// Removes a previous run's leftovers by its record (after a crash or `kill -9`).
fn clean_leftovers(paths: &Paths) -> Result<()> {
    if let Some(old) = Record::load(paths)? {
        println!(
            "Cleaning up what a previous run (pid {}) left behind...",
            old.pid
        );
        let report = state::cleanup(paths, &old);
        for r in &report.removed {
            println!("  - removed {r}");
        }
        if !report.errors.is_empty() {
            bail!(
                "could not remove everything the previous run left:\n  {}\nRemove these by hand, then retry",
                report.errors.join("\n  ")
            );
        }
    }
    Ok(())
}

pub fn up(paths: &Paths, opts: UpOptions) -> Result<()> {
    let listener = preflight(paths, opts.web)?;
    // Parse everything, and give the pods their range, before creating anything.
    let mut topo = topology::load(&opts.files)?;
    topo.pod_range = match &opts.pod_cidr {
        Some(text) => PodRange::requested(text, topo.pods.len()),
        None => PodRange::sized_for(topo.pods.len()),
    }
    .map_err(anyhow::Error::msg)?;
    // Another range is another cluster: it is built anew, not taken over.
    let digest = format!("{}-{}", topology::digest(&opts.files)?, topo.pod_range.0);
    if opts.detach && !opts.daemon_child {
        drop(listener);
        return detach(paths, &opts);
    }
    let _lock = lock(paths)?;
    // A previous run that died (crash, kill -9) of the same manifests is taken over: its
    // namespaces, pinned maps and links kept enforcing meanwhile. Anything else is cleaned up.
    let mut record = Record {
        pid: std::process::id(),
        manifest_digest: digest.clone(),
        ..Default::default()
    };
    let mut resume = false;
    match Record::load(paths)? {
        Some(old) if !opts.fresh && old.manifest_digest == digest && can_take_over(&old) => {
            println!(
                "Taking over the cluster that a previous run (pid {}) left running; its policies stayed in force.",
                old.pid
            );
            topo = old.topology.clone().expect("checked");
            record = Record {
                pid: std::process::id(),
                web: None,
                ..old
            };
            resume = true;
        }
        _ => clean_leftovers(paths)?,
    }
    record.topology = Some(topo.clone());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        println!(
            "Bringing up lab {:?}: {} pods, {} services",
            paths.instance,
            topo.pods.len(),
            topo.services.len()
        );
        record.save(paths)?;
        let lab = match Lab::up(paths.clone(), topo, record, resume).await {
            Ok(lab) => lab,
            Err(e) => return Err(undo_failed_start(paths, e)),
        };
        let served = serve(paths, lab.clone(), listener, opts.lessons.clone())
            .await
            .and_then(|addr| crate::control::fail_point("web").map(|()| addr));
        let addr = match served {
            Ok(a) => a,
            Err(e) => {
                lab.stop_running_parts().await;
                drop(lab);
                return Err(undo_failed_start(paths, e));
            }
        };
        {
            let mut rec = lab.record.lock().expect("record");
            rec.web = Some(format!("http://{addr}/"));
            rec.save(paths)?;
        }
        println!(
            "\nLab {:?} is up in {:.1}s.\n  Web lab:  http://{addr}/\n  Try:      lab get pods\n            lab exec xwing -- curl -s -XPOST deathstar.default.svc.cluster.local/v1/request-landing\n  Stop:     {}",
            paths.instance,
            started.elapsed().as_secs_f64(),
            if opts.daemon_child { "lab down".to_owned() } else { "Ctrl-C (or `lab down`)".to_owned() },
        );
        wait_for_shutdown(&lab).await;
        println!("\nShutting down...");
        let report = lab.teardown().await;
        for e in &report.errors {
            eprintln!("  cleanup: {e}");
        }
        println!("Lab {:?} is down ({} things removed).", paths.instance, report.removed.len());
        if report.errors.is_empty() {
            forget_instance_files(paths);
        }
        Ok(())
    })
}

/// After a failed start (whose running parts are stopped): removes what the record lists, and
/// the instance's lock and log once nothing is left. The error says what went wrong, what was
/// undone and what to do.
fn undo_failed_start(paths: &Paths, cause: anyhow::Error) -> anyhow::Error {
    println!("  ! start-up failed; undoing what was created...");
    let report = match Record::load(paths) {
        Ok(Some(rec)) => state::cleanup(paths, &rec),
        Ok(None) => state::CleanupReport::default(),
        Err(e) => state::CleanupReport {
            errors: vec![format!("{e:#}")],
            ..Default::default()
        },
    };
    if report.errors.is_empty() {
        forget_instance_files(paths);
        anyhow::anyhow!(
            "lab up failed: {cause:#}\nEverything it had created was removed ({} things); fix the cause above and run `lab up` again.",
            report.removed.len()
        )
    } else {
        anyhow::anyhow!(
            "lab up failed: {cause:#}\nSome of what it created could not be removed:\n  {}\nRun `lab --instance {} down` to retry the cleanup, then `lab up`.",
            report.errors.join("\n  "),
            paths.instance
        )
    }
}

/// Removes the lock and the background log of an instance that is fully down.
fn forget_instance_files(paths: &Paths) {
    let _ = std::fs::remove_file(lock_path(paths));
    let _ = std::fs::remove_file(daemon_log(paths));
    let _ = std::fs::remove_dir("/run/lab");
}

async fn wait_for_shutdown(lab: &Arc<Lab>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut api = lab.shutdown.subscribe();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = api.changed() => {}
    }
}

/// Serves the control API on the instance socket and the API plus the page on `listener`.
async fn serve(
    paths: &Paths,
    lab: Arc<Lab>,
    listener: std::net::TcpListener,
    lessons: Option<PathBuf>,
) -> Result<SocketAddr> {
    let backend: web::SharedBackend = Arc::new(LabBackend(lab.clone()));
    let app = web::router_with(
        backend,
        web::Options {
            lessons_dir: lessons.map(|d| d.canonicalize().unwrap_or(d)),
        },
    )
    .merge(crate::bench::web::routes(lab.clone()));
    let sock = paths.api_socket();
    let _ = std::fs::remove_file(&sock);
    let unix = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("listening on {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let tcp = tokio::net::TcpListener::from_std(listener)?;
    let addr = tcp.local_addr()?;
    *lab.web_addr.lock().expect("web") = Some(addr);
    let mut stop1 = lab.shutdown.subscribe();
    let mut stop2 = lab.shutdown.subscribe();
    let app2 = app.clone();
    tokio::spawn(async move {
        let _ = axum::serve(unix, app2)
            .with_graceful_shutdown(async move {
                let _ = stop1.changed().await;
            })
            .await;
    });
    tokio::spawn(async move {
        let _ = axum::serve(tcp, app)
            .with_graceful_shutdown(async move {
                let _ = stop2.changed().await;
            })
            .await;
    });
    Ok(addr)
}

/// `up -d`: re-runs `lab up` in the background, shows its progress, and returns once it serves.
fn detach(paths: &Paths, opts: &UpOptions) -> Result<()> {
    let exe = std::env::current_exe()?;
    let log = daemon_log(paths);
    std::fs::create_dir_all("/run/lab")?;
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    // Read through a handle of our own: a failed start removes the log file, and its last
    // words must still reach the user.
    let mut reader = std::fs::File::open(&log)?;
    let mut args: Vec<String> = vec![
        "--instance".into(),
        paths.instance.clone(),
        "up".into(),
        "--daemon-child".into(),
        "-d".into(),
    ];
    args.extend(["--web".into(), opts.web.to_string()]);
    for f in &opts.files {
        args.extend(["-f".into(), f.display().to_string()]);
    }
    if opts.fresh {
        args.push("--fresh".into());
    }
    if let Some(range) = &opts.pod_cidr {
        args.extend(["--pod-cidr".into(), range.clone()]);
    }
    if let Some(l) = &opts.lessons {
        args.extend(["--lessons".into(), l.display().to_string()]);
    }
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe; it detaches the lab from this terminal.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().context("starting the lab in the background")?;
    let client = Client::new(paths);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = text.len();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes)?;
        text.push_str(&String::from_utf8_lossy(&bytes));
        print!("{}", &text[shown..]);
        if text.contains("is up in") {
            println!(
                "  (running in the background, pid {}; its log: {})",
                child.id(),
                log.display()
            );
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            // Whatever it wrote before it ended.
            let mut rest = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut rest)?;
            eprint!("{}", String::from_utf8_lossy(&rest));
            bail!("the lab stopped during start-up ({status}); see the messages above");
        }
        if Instant::now() > deadline {
            bail!(
                "the lab did not come up within 2 minutes; see {}",
                log.display()
            );
        }
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        let _ = &client;
    }
}

/// `lab down`: asks a running lab to stop, or cleans up after a dead one.
pub fn down(paths: &Paths) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = Client::new(paths);
    let record = Record::load(paths)?;
    let asked = rt
        .block_on(client.post::<serde::de::IgnoredAny>("/api/x/shutdown", &()))
        .is_ok();
    if asked {
        println!("Stopping lab {:?}...", paths.instance);
        let pid = record.as_ref().map(|r| r.pid).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid != 0 && Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
            {
                break;
            }
        }
        if let Ok(None) = Record::load(paths) {
            println!("Lab {:?} is down.", paths.instance);
            return Ok(());
        }
    }
    match Record::load(paths)? {
        None => {
            if !asked {
                println!("No lab named {:?} is up; nothing to do.", paths.instance);
            }
            Ok(())
        }
        Some(rec) => {
            if rec.pid != 0 && Path::new(&format!("/proc/{}", rec.pid)).exists() && !asked {
                bail!(
                    "lab {:?} (pid {}) does not answer on its socket; stop it with `kill {}` and run `lab down` again",
                    paths.instance,
                    rec.pid,
                    rec.pid
                );
            }
            if !nix::unistd::Uid::effective().is_root() {
                bail!("cleaning up needs root: run `sudo lab down`");
            }
            let _lock = lock(paths)?;
            println!(
                "Removing what lab {:?} (pid {}, no longer running) left behind...",
                paths.instance, rec.pid
            );
            let report = state::cleanup(paths, &rec);
            for r in &report.removed {
                println!("  - removed {r}");
            }
            if report.errors.is_empty() {
                println!("Lab {:?} is down.", paths.instance);
                forget_instance_files(paths);
                Ok(())
            } else {
                bail!(
                    "some things could not be removed:\n  {}",
                    report.errors.join("\n  ")
                )
            }
        }
    }
}
