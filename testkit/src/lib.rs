//! Integration-test harness: network namespaces, veth pairs, bpffs mounts and child processes
//! with unique names, removed on drop (also when the test panics), so tests run in parallel and
//! leave nothing behind.
//!
//! Tests that need root call [`require_root`] first: they fail loudly when not root rather than
//! being skipped silently, because a skipped enforcement test proves nothing.
//!
//! The harness builds its fixtures with iproute2 (`ip`) on purpose: it is independent of the
//! product's own rtnetlink code, which it is used to test.

use std::{
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Panics with a clear message unless running as root.
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!(
            "this test needs root (network namespaces, veth, eBPF). Run the suite as root with \
             the README's test command; it is not skipped, because a skipped enforcement test \
             proves nothing"
        );
    }
}

/// A short unique name (fits in the 15 bytes of an interface name with a 3-byte suffix):
/// `<prefix><pid base36><counter>`.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("{prefix}{}{n}", base36(pid))
}

fn base36(mut v: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(v % 36) as usize]);
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// Runs a command, failing with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A named network namespace (`ip netns add`), deleted on drop with every process in it that
/// the test started through [`NetNs::spawn`].
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a program inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        Ok(Command::new("ip").args(&all).output()?)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Starts a long-running program in the namespace; it is killed when the guard drops.
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        let mut all = vec!["netns", "exec", self.name.as_str()];
        all.extend_from_slice(args);
        let child = Command::new("ip")
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(ChildGuard(Some(child)))
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it creates live there).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        Ok(in_netns(&self.path(), f)?)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("testkit: cleanup of netns {}: {e:#}", self.name);
        }
    }
}

/// Runs `f` on a scoped thread that has entered the network namespace at `path`.
pub use netns::run_in as in_netns;

/// A child process killed and reaped on drop.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bpffs mounted at a unique directory, unmounted and removed on drop.
pub struct BpfFs {
    pub path: PathBuf,
}

impl BpfFs {
    pub fn new() -> Result<Self> {
        let path = PathBuf::from("/run/lab-test").join(unique_name("bpf"));
        std::fs::create_dir_all(&path)?;
        run(
            "mount",
            &["-t", "bpf", "bpf", path.to_str().expect("utf-8 path")],
        )?;
        Ok(Self { path })
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        if let Err(e) = run("umount", &[self.path.to_str().unwrap_or_default()]) {
            eprintln!("testkit: cleanup of bpffs {}: {e:#}", self.path.display());
        }
        let _ = std::fs::remove_dir(&self.path);
        let _ = std::fs::remove_dir("/run/lab-test");
    }
}

/// A small routed topology like the lab's: a "node" namespace and pods attached to it by veth
/// pairs, each pod with a /32 address and a default route through the node.
pub struct Topology {
    pub node: NetNs,
    pub pods: Vec<Pod>,
}

pub struct Pod {
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    /// Name of the node side of the veth, in the node namespace.
    pub node_if: String,
}

pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);

impl Topology {
    /// A node namespace with `n` pods at 10.200.0.2, .3, ...
    pub fn new(n: usize) -> Result<Self> {
        let node = NetNs::new("tnode")?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        node.ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", "lo"])?;
        let mut topo = Self {
            node,
            pods: Vec::new(),
        };
        for i in 0..n {
            topo.add_pod(Ipv4Addr::new(10, 200, 0, 2 + i as u8))?;
        }
        Ok(topo)
    }

    fn add_pod(&mut self, ip: Ipv4Addr) -> Result<()> {
        let ns = NetNs::new("tpod")?;
        let node_if = unique_name("tv");
        // Create the pair in the node namespace, then move the pod end.
        self.node.ip(&[
            "link", "add", &node_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])?;
        self.node.ip(&["link", "set", &node_if, "up"])?;
        self.node
            .sysctl(&format!("net.ipv4.conf.{node_if}.proxy_arp"), "1")?;
        self.node
            .ip(&["route", "add", &format!("{ip}/32"), "dev", &node_if])?;
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            &format!("{GATEWAY}"),
            "dev",
            "eth0",
            "scope",
            "link",
        ])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("{GATEWAY}"),
            "dev",
            "eth0",
        ])?;
        self.pods.push(Pod { ns, ip, node_if });
        Ok(())
    }
}

/// Tries a TCP connection from inside `ns` to `addr:port`; `Ok(true)` if it connected within
/// `timeout`, `Ok(false)` if it timed out or was refused.
pub fn tcp_connects(ns: &NetNs, addr: Ipv4Addr, port: u16, timeout: Duration) -> Result<bool> {
    ns.run(move || std::net::TcpStream::connect_timeout(&(addr, port).into(), timeout).is_ok())
}

/// Sends `msg` over TCP from `ns` and returns the reply (read until EOF).
pub fn tcp_roundtrip(
    ns: &NetNs,
    addr: Ipv4Addr,
    port: u16,
    msg: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>> {
    let msg = msg.to_vec();
    ns.run(move || -> Result<Vec<u8>> {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect_timeout(&(addr, port).into(), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&msg)?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(out)
    })?
}

/// A TCP server inside `ns`: reads each request to EOF, answers `reply`, then closes.
/// A background thread serves a listener opened in the namespace until the returned guard drops.
pub struct TcpServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpServer {
    pub fn start(ns: &NetNs, port: u16, reply: &'static [u8]) -> Result<Self> {
        // The listener belongs to the namespace it was opened in; serving it needs no more.
        let listener = ns.run(|| std::net::TcpListener::bind(("0.0.0.0", port)))??;
        listener.set_nonblocking(true)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        // Read the request to its end first: closing with unread data would
                        // make the kernel answer with a reset.
                        use std::io::Read;
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut sink = Vec::new();
                        let _ = s.read_to_end(&mut sink);
                        let _ = s.write_all(reply);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
