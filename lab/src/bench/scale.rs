//! `lab bench scale`: how the lab's costs grow with the number of pods. For each pod count it
//! brings up a lab of its own — ten Deployments (`tier-0` … `tier-9`, the `lab/echo` image)
//! sharing the pods, a Service per tier and one client pod — and measures, as a user would
//! see them:
//!
//! - `lab up -d` until it returns, and until every pod runs and is ready; the machine's memory
//!   in use (MemTotal − MemAvailable) before and after, and the lab process's own share;
//! - 100 policies applied at once (policy *i* lets `tier-(i+1)` reach `tier-i` on one port),
//!   the identities, endpoints and policy-map entries they make, and one more policy applied;
//! - `/api/pods` (what the web page polls), its size and time;
//! - flow events: bursts of UDP packets from the client to a port policy denies, at rising
//!   rates, counting what the datapath dropped, what the ring buffer lost and what reached the
//!   flow log — the highest rate carried without loss;
//! - `lab down`.
//!
//! Results go to `scale.json` and `scale.md` in the output directory; docs/benchmarks.md
//! explains the method and records a run.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::labctl::LabCtl;

/// Workload pods are spread over this many Deployments (one identity each).
const TIERS: usize = 10;
/// Policies applied at each pod count.
const POLICIES: usize = 100;
/// The port the echo pods listen on, and the one no policy allows (for the flow bursts).
const ECHO_PORT: u16 = 8080;
const DENIED_PORT: u16 = 9999;
/// Packets per second offered in the flow-event bursts (each burst lasts a second).
const BURST_RATES: &[u64] = &[5_000, 20_000, 50_000, 100_000, 200_000, 400_000];

#[derive(Serialize)]
pub struct ScalePoint {
    /// Workload pods asked for; the lab also runs a client and the cluster DNS.
    pub pods: usize,
    pub total_pods: usize,
    pub pod_range: String,
    pub up_seconds: f64,
    pub ready_seconds: f64,
    /// The machine's memory in use, after minus before (includes the kernel's share: network
    /// namespaces, veths, BPF maps; and anything else that ran meanwhile).
    pub memory_mib: f64,
    pub memory_per_pod_kib: f64,
    /// The proportional set size of the lab's processes: the lab itself and every pod's.
    pub processes_pss_mib: f64,
    pub lab_process_mib: f64,
    /// CPU the lab process uses while the cluster idles (per cent of one core, over 5 s).
    pub lab_idle_cpu_percent: f64,
    pub apply_100_seconds: f64,
    pub identities: u64,
    pub endpoints: u64,
    pub policy_map_entries: u64,
    pub apply_one_more_seconds: f64,
    pub api_pods_ms: f64,
    pub api_pods_kib: f64,
    /// From a packet sent to its flow arriving on `/api/flows/stream` (median of 5).
    pub flow_stream_ms: f64,
    pub bursts: Vec<Burst>,
    /// The highest offered rate whose every packet was dropped by policy, kept by the ring
    /// buffer and recorded in the flow log.
    pub lossless_events_per_second: Option<f64>,
    pub down_seconds: f64,
}

#[derive(Serialize)]
pub struct Burst {
    pub offered_pps: u64,
    pub sent: u64,
    /// What the sender achieved (it may fall short of the offered rate).
    pub sent_per_second: f64,
    pub dropped_by_policy: u64,
    pub ring_buffer_lost: u64,
    pub recorded: u64,
}

impl Burst {
    fn lossless(&self) -> bool {
        self.dropped_by_policy >= self.sent
            && self.ring_buffer_lost == 0
            && self.recorded >= self.dropped_by_policy
    }
}

/// The cluster for `pods` workload pods.
pub fn manifest(pods: usize) -> String {
    let mut out = String::from(
        "# Written by `lab bench scale`: workload pods spread over ten Deployments, a Service\n\
         # per Deployment and one client.\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: scale-client\n  labels:\n    app: scale-client\n\
         spec:\n  containers:\n  - name: ship\n    image: lab/ship\n",
    );
    for tier in 0..TIERS {
        let replicas = pods / TIERS + usize::from(tier < pods % TIERS);
        if replicas == 0 {
            continue;
        }
        let _ = write!(
            out,
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: tier-{tier}\nspec:\n  \
             replicas: {replicas}\n  selector:\n    matchLabels:\n      app: tier-{tier}\n  \
             template:\n    metadata:\n      labels:\n        app: tier-{tier}\n    spec:\n      \
             containers:\n      - name: echo\n        image: lab/echo\n        env:\n        \
             - name: PORT\n          value: \"{ECHO_PORT}\"\n\
             ---\napiVersion: v1\nkind: Service\nmetadata:\n  name: tier-{tier}\nspec:\n  \
             selector:\n    app: tier-{tier}\n  ports:\n  - port: {ECHO_PORT}\n"
        );
    }
    out
}

/// Policy `i`: `tier-(i+1)` may reach `tier-i` on port 8000+i.
fn policy(i: usize) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: scale-{i}\n\
         spec:\n  endpointSelector:\n    matchLabels:\n      app: tier-{}\n  ingress:\n  \
         - fromEndpoints:\n    - matchLabels:\n        app: tier-{}\n    toPorts:\n    \
         - ports:\n      - port: \"{}\"\n        protocol: TCP\n",
        i % TIERS,
        (i + 1) % TIERS,
        8000 + i
    )
}

/// The kB figure of a `Name:   1234 kB` line of a /proc file (meminfo, status, smaps_rollup).
fn proc_kib(file: &str, name: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn memory_in_use_kib() -> Result<u64> {
    let field = |name: &str| {
        proc_kib("/proc/meminfo", name).with_context(|| format!("{name} in /proc/meminfo"))
    };
    Ok(field("MemTotal")? - field("MemAvailable")?)
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: u32) -> Duration {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The fields after the command name (which is in parentheses): utime, stime are
            // the 12th and 13th of them.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A process's proportional set size (shared pages divided among their users).
fn pss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss").unwrap_or(0)
}

/// Every process in the cgroup tree under `dir`.
fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(entry.path());
            }
        }
    }
    pids
}

fn rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS").unwrap_or(0)
}

/// The sum of a metric's samples whose labels contain `filter` (OpenMetrics text).
fn metric_sum(text: &str, name: &str, filter: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && l.contains(filter)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Sends `count` UDP packets at `pps` from inside the pod whose network namespace is `netns`.
fn udp_burst(netns: &Path, to: SocketAddr, count: u64, pps: u64) -> Result<Duration> {
    netns::run_in(netns, || -> Result<Duration> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let payload = [0u8; 64];
        let start = Instant::now();
        let gap = Duration::from_secs_f64(1.0 / pps as f64);
        for i in 0..count {
            // Paced in slices of a millisecond's worth, so the rate holds without a timer per packet.
            if i % (pps / 1000).max(1) == 0 {
                let due = gap * i as u32;
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            // A full socket buffer is the sender's limit, not the datapath's: retry.
            while let Err(e) = sock.send_to(&payload, to) {
                if e.raw_os_error() != Some(libc_enobufs()) {
                    return Err(e.into());
                }
                std::thread::yield_now();
            }
        }
        Ok(start.elapsed())
    })?
}

const fn libc_enobufs() -> i32 {
    nix::errno::Errno::ENOBUFS as i32
}

/// The time from a packet to its flow on the live stream, median of five: a packet to a port
/// no policy allows, then the wait for the flow that names that port.
fn flow_stream_latency(instance: &str, netns: &Path, target: Ipv4Addr) -> Result<f64> {
    let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
    let client = crate::client::Client::new(&crate::paths::Paths::new(instance));
    // Ends with the lab (the stream closes) or at the first event after `rx` is gone.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = rt.block_on(client.stream_events("/api/flows/stream", |_, data| {
            tx.send((data.to_owned(), Instant::now())).is_ok()
        }));
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for port in DENIED_PORT - 5..DENIED_PORT {
        while rx.try_recv().is_ok() {}
        let sent = Instant::now();
        udp_burst(netns, SocketAddr::from((target, port)), 1, 1000)?;
        let wanted = format!("\"destination_port\":{port}");
        loop {
            let (data, at) = rx
                .recv_timeout(Duration::from_secs(5))
                .map_err(|_| anyhow::anyhow!("no flow for port {port} on the stream within 5 s"))?;
            if data.contains(&wanted) {
                took.push((at - sent).as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

/// Measures one pod count.
fn measure(exe_instance: &str, pods: usize, tmp: &Path) -> Result<ScalePoint> {
    let manifest_file = tmp.join(format!("scale-{pods}.yaml"));
    std::fs::write(&manifest_file, manifest(pods))?;
    let lab = LabCtl::new(exe_instance)?;
    if lab.pods().is_ok() {
        bail!(
            "a lab named {exe_instance:?} is running; take it down or choose another --bench-instance"
        );
    }
    // Settle what the previous count freed before reading memory.
    std::thread::sleep(Duration::from_secs(2));
    let mem_before = memory_in_use_kib()?;
    let started = Instant::now();
    let up = lab.cli(&[
        "up",
        "-d",
        "--web",
        "127.0.0.1:0",
        "-f",
        &manifest_file.display().to_string(),
    ]);
    let up_seconds = started.elapsed().as_secs_f64();
    let result = up.and_then(|_| measure_running(&lab, pods, started, up_seconds, mem_before));
    let down_started = Instant::now();
    let down = lab.cli(&["down"]);
    let down_seconds = down_started.elapsed().as_secs_f64();
    let mut point = result?;
    down?;
    point.down_seconds = down_seconds;
    Ok(point)
}

fn measure_running(
    lab: &LabCtl,
    pods: usize,
    started: Instant,
    up_seconds: f64,
    mem_before: u64,
) -> Result<ScalePoint> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let list = loop {
        let list = lab.pods()?;
        if list.iter().all(|p| p.ready) {
            break list;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} pods are not ready after 10 minutes",
                list.iter().filter(|p| !p.ready).count(),
                list.len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ready_seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let memory_kib = memory_in_use_kib()?.saturating_sub(mem_before);
    let status = lab.status()?;
    let lab_kib = rss_kib(status.pid);
    let cgroups = crate::paths::Paths::new(&lab.instance).cgroup_root();
    let pss_kib: u64 = std::iter::once(status.pid)
        .chain(cgroup_pids(&cgroups))
        .map(pss_kib)
        .sum();
    let idle = Duration::from_secs(5);
    let cpu_before = cpu_time(status.pid);
    std::thread::sleep(idle);
    let lab_idle_cpu_percent =
        (cpu_time(status.pid) - cpu_before).as_secs_f64() / idle.as_secs_f64() * 100.0;

    let all: String = (0..POLICIES)
        .map(|i| policy(i) + "---\n")
        .collect::<String>();
    let t = Instant::now();
    lab.apply("scale-policies.yaml", &all)?;
    let apply_100_seconds = t.elapsed().as_secs_f64();
    let metrics = lab.metrics()?;
    let t = Instant::now();
    lab.apply("scale-one-more.yaml", &policy(POLICIES))?;
    let apply_one_more_seconds = t.elapsed().as_secs_f64();

    let mut api_ms = Vec::new();
    let mut api_bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        api_bytes = lab.get_text("/api/pods")?.len();
        api_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    api_ms.sort_by(f64::total_cmp);

    // Flow events: the client's packets to a tier-0 pod, dropped by tier-0's ingress policy.
    let client = lab.pod("scale-client")?;
    let target = list
        .iter()
        .find(|p| p.labels.get("app").is_some_and(|a| a == "tier-0"))
        .context("no tier-0 pod")?;
    let to = SocketAddr::from((target.ip, DENIED_PORT));
    let flow_stream_ms = flow_stream_latency(&lab.instance, client.netns(), target.ip)?;
    let mut bursts = Vec::new();
    for &pps in BURST_RATES {
        let before = lab.metrics()?;
        let took = udp_burst(client.netns(), to, pps, pps)?;
        // Let the flow log catch up with the ring buffer.
        std::thread::sleep(Duration::from_secs(2));
        let after = lab.metrics()?;
        let delta = |name: &str, filter: &str| {
            metric_sum(&after, name, filter).saturating_sub(metric_sum(&before, name, filter))
        };
        let burst = Burst {
            offered_pps: pps,
            sent: pps,
            sent_per_second: pps as f64 / took.as_secs_f64(),
            dropped_by_policy: delta("cilium_drop_count_total", "Policy denied"),
            ring_buffer_lost: delta("lab_flow_events_lost_total", ""),
            recorded: delta("hubble_policy_verdicts_total", "action=\"dropped\""),
        };
        let lossless = burst.lossless();
        bursts.push(burst);
        if !lossless {
            break;
        }
    }
    let lossless_events_per_second = bursts
        .iter()
        .filter(|b| b.lossless())
        .map(|b| b.sent_per_second)
        .reduce(f64::max);
    let total_pods = list.len();
    Ok(ScalePoint {
        pods,
        total_pods,
        pod_range: status.pod_range,
        up_seconds,
        ready_seconds,
        memory_mib: memory_kib as f64 / 1024.0,
        memory_per_pod_kib: memory_kib as f64 / total_pods as f64,
        processes_pss_mib: pss_kib as f64 / 1024.0,
        lab_process_mib: lab_kib as f64 / 1024.0,
        lab_idle_cpu_percent,
        apply_100_seconds,
        identities: metric_sum(&metrics, "cilium_identity", ""),
        endpoints: metric_sum(&metrics, "cilium_endpoint", ""),
        policy_map_entries: metric_sum(&metrics, "lab_policy_map_entries", ""),
        apply_one_more_seconds,
        api_pods_ms: api_ms[api_ms.len() / 2],
        api_pods_kib: api_bytes as f64 / 1024.0,
        flow_stream_ms,
        bursts,
        lossless_events_per_second,
        down_seconds: 0.0,
    })
}

/// Runs every pod count in turn; writes and prints the results.
pub fn run(instance: &str, counts: &[usize], out: &Path) -> Result<Vec<ScalePoint>> {
    let tmp = std::env::temp_dir().join(format!("lab-bench-scale-{instance}"));
    std::fs::create_dir_all(&tmp)?;
    let mut points = Vec::new();
    for &pods in counts {
        eprintln!("[bench] scale: {pods} pods");
        let point = measure(instance, pods, &tmp).with_context(|| format!("at {pods} pods"))?;
        eprintln!(
            "[bench]   up {:.1}s, ready {:.1}s, {:.0} MiB, 100 policies {:.2}s, one more {:.2}s, down {:.1}s",
            point.up_seconds,
            point.ready_seconds,
            point.memory_mib,
            point.apply_100_seconds,
            point.apply_one_more_seconds,
            point.down_seconds
        );
        points.push(point);
        std::fs::write(out.join("scale.json"), serde_json::to_vec_pretty(&points)?)?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let md = markdown(&points);
    std::fs::write(out.join("scale.md"), &md)?;
    println!("{md}");
    Ok(points)
}

pub fn markdown(points: &[ScalePoint]) -> String {
    let mut s = String::from(
        "| pods | range | up | ready | memory | per pod | processes (PSS) | lab process | lab idle CPU | 100 policies | identities | map entries | one more | /api/pods | flow stream | events/s lossless | down |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} s | {:.1} s | {:.0} MiB | {:.0} KiB | {:.0} MiB | {:.0} MiB | {:.0} % | {:.2} s | {} | {} | {:.2} s | {:.1} ms ({:.0} KiB) | {:.1} ms | {} | {:.1} s |",
            p.total_pods,
            p.pod_range,
            p.up_seconds,
            p.ready_seconds,
            p.memory_mib,
            p.memory_per_pod_kib,
            p.processes_pss_mib,
            p.lab_process_mib,
            p.lab_idle_cpu_percent,
            p.apply_100_seconds,
            p.identities,
            p.policy_map_entries,
            p.apply_one_more_seconds,
            p.api_pods_ms,
            p.api_pods_kib,
            p.flow_stream_ms,
            p.lossless_events_per_second
                .map_or("none".into(), |r| format!("{r:.0}")),
            p.down_seconds
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_spreads_the_pods_over_the_tiers() {
        let m = manifest(25);
        assert_eq!(m.matches("kind: Deployment").count(), 10);
        assert!(m.contains("name: tier-4\nspec:\n  replicas: 3"));
        assert!(m.contains("name: tier-5\nspec:\n  replicas: 2"));
        assert_eq!(manifest(3).matches("kind: Deployment").count(), 3);
    }

    #[test]
    fn proc_files_are_read_in_kib() {
        assert!(proc_kib("/proc/meminfo", "MemTotal").is_some_and(|k| k > 0));
        assert!(proc_kib("/proc/self/status", "VmRSS").is_some_and(|k| k > 0));
        // A longer name that starts the same is not taken for it.
        assert_eq!(proc_kib("/proc/meminfo", "Mem"), None);
    }

    #[test]
    fn metric_sums_filter_by_name_and_labels() {
        let text =
            "# TYPE x counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\"} 4\nx_totally 9\nx_total 1\n";
        assert_eq!(metric_sum(text, "x_total", ""), 8);
        assert_eq!(metric_sum(text, "x_total", "a=\"2\""), 4);
    }
}
