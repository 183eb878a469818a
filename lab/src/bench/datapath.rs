//! Datapath figures: what the enforcer's TC programs cost per packet (from the kernel's BPF run
//! statistics), and how a fixed flow fares as the number of L3/L4 rules grows from 1 to 10,000,
//! for the lab's eBPF datapath and for iptables with the same number of rules.
//!
//! The BPF statistics are switched on with `BPF_ENABLE_STATS` for the duration of a measurement
//! only (the kernel counts `run_time_ns` and `run_cnt` per program while any such descriptor is
//! open, which is what `sysctl kernel.bpf_stats_enabled=1` does globally). The programs are found
//! through the lab's pinned TC links of the server pod's veth: the link's `prog_id` (from
//! `/proc/self/fdinfo`), then the program's own fdinfo.
//!
//! iptables cannot be timed per packet from the outside, so both filters are also measured the
//! same way: the closed-loop throughput of a fixed keep-alive flow while N rules are in force,
//! turned into extra nanoseconds per request and per packet entering the server pod against the
//! same flow with no filter at all. The iptables rules are written without the conntrack shortcut
//! (no `ESTABLISHED` rule first) and with the matching rule last, so every packet walks all N —
//! the cost a linear rule list has; the lab's datapath answers established packets from its
//! connection table and new ones with one LPM lookup whatever N is.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::{configs, labctl::LabCtl, report::Goal};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Datapath {
    /// The fixed flow: closed loop, keep-alive.
    pub connections: usize,
    pub duration_s: f64,
    pub rule_counts: Vec<usize>,
    /// The flow with no policy and no firewall, measured before and after the points (mean).
    pub baseline: Point,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// none, ebpf or iptables.
    pub filter: String,
    pub rules: usize,
    /// measured or failed.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub rps: f64,
    pub requests: u64,
    /// Packets that entered the server pod per request (its eth0 receive counter).
    pub server_rx_packets_per_request: Option<f64>,
    /// The enforcer's TC programs during this run (they run in every configuration).
    pub bpf: Option<BpfCost>,
    /// Against the baseline: 1/rps − 1/rps₀, in ns (CPU time the filter adds per request).
    pub extra_ns_per_request: Option<f64>,
    /// The same per packet entering the server pod.
    pub extra_ns_per_packet: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BpfCost {
    /// `from_pod` (TC ingress of the pods' veths: packets leaving pods).
    pub from_pod_ns: f64,
    pub from_pod_runs: u64,
    /// `to_pod` (TC egress: packets entering pods).
    pub to_pod_ns: f64,
    pub to_pod_runs: u64,
    /// Both programs: run time over runs.
    pub ns_per_packet: f64,
}

impl Datapath {
    fn series(&self, filter: &str) -> Vec<&Point> {
        self.points
            .iter()
            .filter(|p| p.filter == filter && p.status == "measured")
            .collect()
    }

    /// eBPF per-packet cost flat from the fewest to the most rules, iptables growing.
    pub fn goal(&self) -> Goal {
        let ebpf = self.series("ebpf");
        let ipt = self.series("iptables");
        let ends =
            |v: &[&Point], f: &dyn Fn(&Point) -> Option<f64>| -> Option<(f64, f64, usize, usize)> {
                let (a, b) = (v.first()?, v.last()?);
                Some((f(a)?, f(b)?, a.rules, b.rules))
            };
        let e = ends(&ebpf, &|p| p.bpf.as_ref().map(|b| b.ns_per_packet));
        let i = ends(&ipt, &|p| p.extra_ns_per_packet);
        let (value, met, note) = match (e, i) {
            (Some((e0, e1, n0, n1)), Some((i0, i1, _, _))) => {
                let ratio = e1 / e0;
                let flat = ratio <= 1.25;
                let grows = i1 > 2.0 * i0.max(1.0) && i1 > 100.0;
                (
                    Some(ratio),
                    Some(flat && grows),
                    format!(
                        "eBPF {e0:.0} → {e1:.0} ns/packet from {n0} to {n1} rules (×{ratio:.2}); \
                         iptables adds {i0:.0} → {i1:.0} ns/packet"
                    ),
                )
            }
            _ => (None, None, "datapath points missing".into()),
        };
        Goal {
            goal: "eBPF per-packet cost flat from 1 to 10,000 rules while iptables grows".into(),
            target: None,
            value,
            met,
            note,
        }
    }

    pub fn markdown(&self) -> String {
        let mut m = format!(
            "## Datapath: cost per packet as rules grow\n\nFixed flow: closed loop, {} keep-alive \
             connections, {} s per point. Baseline (no policy, no firewall): {:.0} req/s, {} \
             packets into the server per request; the enforcer's programs {}.\n\n\
             | Filter | Rules | Req/s | eBPF ns/packet (from_pod / to_pod) | Extra ns/request | Extra ns/packet |\n\
             |---|---:|---:|---:|---:|---:|\n",
            self.connections,
            self.duration_s,
            self.baseline.rps,
            self.baseline
                .server_rx_packets_per_request
                .map(|v| format!("{v:.2}"))
                .unwrap_or_default(),
            self.baseline
                .bpf
                .as_ref()
                .map(|b| format!("{:.0} ns per packet", b.ns_per_packet))
                .unwrap_or_else(|| "not measured".into()),
        );
        for p in &self.points {
            if p.status != "measured" {
                m.push_str(&format!(
                    "| {} | {} | failed: {} | | | |\n",
                    p.filter,
                    p.rules,
                    p.reason.clone().unwrap_or_default()
                ));
                continue;
            }
            let f = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_default();
            m.push_str(&format!(
                "| {} | {} | {:.0} | {} | {} | {} |\n",
                p.filter,
                p.rules,
                p.rps,
                p.bpf
                    .as_ref()
                    .map(|b| format!(
                        "{:.0} ({:.0} / {:.0})",
                        b.ns_per_packet, b.from_pod_ns, b.to_pod_ns
                    ))
                    .unwrap_or_default(),
                f(p.extra_ns_per_request),
                f(p.extra_ns_per_packet),
            ));
        }
        m
    }
}

// ---- BPF statistics -------------------------------------------------------------------------

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_ENABLE_STATS: libc::c_long = 32;

/// The `bpf` system call with a zeroed attribute block the command fills in part of.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<OwnedFd> {
    // SAFETY: the attribute block is 128 zero-initialised bytes, larger than any of the
    // structures these commands read; the returned descriptor is owned at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Keeps the kernel's BPF run-time statistics on while it lives (closing the descriptor
/// turns them off).
pub struct StatsOn {
    _enabled: OwnedFd,
}

pub fn enable_stats() -> Result<StatsOn> {
    let mut attr = [0u64; 16];
    attr[0] = 0; // BPF_STATS_RUN_TIME
    let enabled = bpf(BPF_ENABLE_STATS, &mut attr)
        .context("BPF_ENABLE_STATS (the kernel's BPF run-time statistics)")?;
    Ok(StatsOn { _enabled: enabled })
}

fn fdinfo(fd: &OwnedFd) -> Result<String> {
    Ok(std::fs::read_to_string(format!(
        "/proc/self/fdinfo/{}",
        fd.as_raw_fd()
    ))?)
}

fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// A program of the enforcer, found through one of its pinned links.
pub struct Prog {
    fd: OwnedFd,
}

impl Prog {
    pub fn from_link(pin: &Path) -> Result<Self> {
        let path = CString::new(pin.as_os_str().as_encoded_bytes())?;
        let mut attr = [0u64; 16];
        attr[0] = path.as_ptr() as u64;
        let link = bpf(BPF_OBJ_GET, &mut attr)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let id = field(&fdinfo(&link)?, "prog_id").context("no prog_id in the link's fdinfo")?;
        let mut attr = [0u64; 16];
        attr[0] = id; // prog_id in the low 32 bits, next_id and open_flags zero
        let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).context("BPF_PROG_GET_FD_BY_ID")?;
        Ok(Prog { fd })
    }

    /// (run_time_ns, run_cnt) so far.
    pub fn stats(&self) -> Result<(u64, u64)> {
        let info = fdinfo(&self.fd)?;
        Ok((
            field(&info, "run_time_ns").unwrap_or(0),
            field(&info, "run_cnt").unwrap_or(0),
        ))
    }
}

/// The pinned links of a pod's veth: `(from_pod, to_pod)`.
pub fn link_pins(instance: &str, iface: &str) -> (PathBuf, PathBuf) {
    let dir = crate::paths::Paths::new(instance).bpffs().join("links");
    (
        dir.join(format!("{iface}_in")),
        dir.join(format!("{iface}_out")),
    )
}

pub struct Progs {
    from_pod: Prog,
    to_pod: Prog,
}

impl Progs {
    pub fn open(instance: &str, iface: &str) -> Result<Self> {
        let (a, b) = link_pins(instance, iface);
        Ok(Progs {
            from_pod: Prog::from_link(&a)?,
            to_pod: Prog::from_link(&b)?,
        })
    }

    pub fn snapshot(&self) -> Result<[(u64, u64); 2]> {
        Ok([self.from_pod.stats()?, self.to_pod.stats()?])
    }
}

pub fn cost(before: [(u64, u64); 2], after: [(u64, u64); 2]) -> Option<BpfCost> {
    let d = |i: usize| {
        (
            after[i].0.saturating_sub(before[i].0),
            after[i].1.saturating_sub(before[i].1),
        )
    };
    let ((ft, fc), (tt, tc)) = (d(0), d(1));
    if fc + tc == 0 {
        return None;
    }
    let per = |t: u64, c: u64| if c == 0 { 0.0 } else { t as f64 / c as f64 };
    Some(BpfCost {
        from_pod_ns: per(ft, fc),
        from_pod_runs: fc,
        to_pod_ns: per(tt, tc),
        to_pod_runs: tc,
        ns_per_packet: per(ft + tt, fc + tc),
    })
}

// ---- the scaling run ------------------------------------------------------------------------

pub struct Plan {
    pub connections: usize,
    pub duration: Duration,
    pub rule_counts: Vec<usize>,
}

fn rx_packets(lab: &LabCtl, server: &super::labctl::Pod) -> Option<u64> {
    let text = lab.exec_ok(server, &["cat", "/proc/net/dev"]).ok()?;
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == "eth0").then(|| rest.split_whitespace().nth(1)?.parse().ok())?
    })
}

/// Runs the flow once and returns the point (without the comparison to the baseline).
fn measure(
    lab: &LabCtl,
    ctx: &super::Ctx,
    plan: &Plan,
    filter: &str,
    rules: usize,
) -> Result<Point> {
    let progs = Progs::open(&lab.instance, &ctx.server.node_interface).ok();
    let rx0 = rx_packets(lab, &ctx.server);
    let s0 = progs.as_ref().and_then(|p| p.snapshot().ok());
    let report = super::run_load(
        lab,
        ctx,
        configs::ECHO_PORT,
        None,
        plan.connections,
        1,
        plan.duration,
        Duration::from_millis(300),
    )?;
    let s1 = progs.as_ref().and_then(|p| p.snapshot().ok());
    let rx1 = rx_packets(lab, &ctx.server);
    let requests = report.completed;
    if requests == 0 {
        bail!("no request completed: {:?}", report.errors);
    }
    Ok(Point {
        filter: filter.into(),
        rules,
        status: "measured".into(),
        reason: None,
        rps: report.achieved_rps,
        requests,
        server_rx_packets_per_request: match (rx0, rx1) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / requests as f64),
            _ => None,
        },
        bpf: match (s0, s1) {
            (Some(a), Some(b)) => cost(a, b),
            _ => None,
        },
        extra_ns_per_request: None,
        extra_ns_per_packet: None,
    })
}

fn failed(filter: &str, rules: usize, e: &anyhow::Error) -> Point {
    Point {
        filter: filter.into(),
        rules,
        status: "failed".into(),
        reason: Some(format!("{e:#}")),
        rps: 0.0,
        requests: 0,
        server_rx_packets_per_request: None,
        bpf: None,
        extra_ns_per_request: None,
        extra_ns_per_packet: None,
    }
}

/// Measurements of a datapath run (the progress bar's steps): the baseline before and after,
/// and both filters at each rule count.
pub fn steps(plan: &Plan) -> usize {
    2 + 2 * plan.rule_counts.len()
}

/// Announces the next measurement to the progress file; fails if the run was cancelled.
fn announce(plan: &Plan, point: &mut usize, filter: &str, rules: usize) -> Result<()> {
    if super::progress::cancelled() {
        bail!("cancelled");
    }
    *point += 1;
    let what = match filter {
        "none" => "baseline: no policy, no firewall".to_string(),
        "ebpf" => format!("lab eBPF with {rules} rules"),
        _ => format!("{filter} with {rules} rules"),
    };
    super::progress::step(
        "datapath",
        serde_json::json!({
            "point": *point, "points": steps(plan), "filter": filter, "rules": rules,
            "message": format!("datapath figures: {what} (measurement {} of {})", *point, steps(plan)),
        }),
    );
    Ok(())
}

pub fn run(lab: &LabCtl, ctx: &super::Ctx, plan: &Plan) -> Result<Datapath> {
    let _stats = enable_stats()?;
    lab.delete_policies()?;
    super::flush_firewall(lab, ctx);
    let mut point = 0;
    eprintln!("[bench] datapath: baseline (no policy, no firewall)");
    announce(plan, &mut point, "none", 0)?;
    let before = measure(lab, ctx, plan, "none", 0)?;
    let mut points = Vec::new();
    for &n in &plan.rule_counts {
        // eBPF: n ingress rules on distinct ports, the bench's own last.
        eprintln!("[bench] datapath: lab eBPF with {n} rules");
        announce(plan, &mut point, "ebpf", n)?;
        let p = (|| {
            lab.apply("bench-datapath.yaml", &configs::many_rules_policy(n))?;
            super::expect_ok(lab, ctx)?;
            std::thread::sleep(Duration::from_millis(500));
            measure(lab, ctx, plan, "ebpf", n)
        })();
        let _ = lab.delete_policies();
        points.push(p.unwrap_or_else(|e| failed("ebpf", n, &e)));
        // iptables: n − 1 rules that never match, then the allow rule, every packet walks all.
        eprintln!("[bench] datapath: iptables with {n} rules");
        announce(plan, &mut point, "iptables", n)?;
        let p = (|| {
            let rules = configs::iptables_rules(ctx.client.ip, true, n.saturating_sub(1), false);
            super::load_firewall(lab, ctx, "iptables", &rules)?;
            super::expect_ok(lab, ctx)?;
            std::thread::sleep(Duration::from_millis(500));
            measure(lab, ctx, plan, "iptables", n)
        })();
        super::flush_firewall(lab, ctx);
        points.push(p.unwrap_or_else(|e| failed("iptables", n, &e)));
    }
    // The baseline again at the end: the comparison uses the mean of both, so slow drift of the
    // machine during the run does not show up as a cost of the last rule counts.
    eprintln!("[bench] datapath: baseline again");
    announce(plan, &mut point, "none", 0)?;
    let after = measure(lab, ctx, plan, "none", 0)?;
    let baseline = Point {
        rps: (before.rps + after.rps) / 2.0,
        requests: before.requests + after.requests,
        server_rx_packets_per_request: match (
            before.server_rx_packets_per_request,
            after.server_rx_packets_per_request,
        ) {
            (Some(a), Some(b)) => Some((a + b) / 2.0),
            (a, b) => a.or(b),
        },
        bpf: before.bpf.clone().or(after.bpf.clone()),
        ..before
    };
    for p in &mut points {
        if p.status != "measured" || baseline.rps <= 0.0 || p.rps <= 0.0 {
            continue;
        }
        let extra = 1e9 / p.rps - 1e9 / baseline.rps;
        p.extra_ns_per_request = Some(extra);
        p.extra_ns_per_packet = baseline
            .server_rx_packets_per_request
            .filter(|v| *v > 0.0)
            .map(|ppr| extra / ppr);
    }
    Ok(Datapath {
        connections: plan.connections,
        duration_s: plan.duration.as_secs_f64(),
        rule_counts: plan.rule_counts.clone(),
        baseline,
        points,
    })
}
