//! The results of a bench run: the JSON document (schema `lab-bench/1`, documented in
//! docs/benchmarks.md), the Markdown table, and the goals of issue 8 checked against them.

use std::collections::BTreeMap;

use demo_services::loadgen::{Errors, Latency, Report, histogram_from_pairs};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "lab-bench/1";

/// Achieved below this share of the requested rate: the server did not keep up.
pub const SATURATION_SHARE: f64 = 0.95;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub schema: String,
    pub started: String,
    pub finished: String,
    pub host: Host,
    pub preset: String,
    pub settings: Settings,
    pub configs: Vec<ConfigResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<super::datapath::Datapath>,
    pub goals: Vec<Goal>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub kernel: String,
    pub cpus: usize,
    pub lab_version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub rate: f64,
    pub connections: usize,
    pub threads: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub max_duration_s: f64,
    pub max_connections: usize,
    pub rounds: usize,
    pub configs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigResult {
    pub id: String,
    pub title: String,
    /// baseline, lab, iptables, nftables or haproxy.
    pub kind: String,
    /// none, L3, L4 or L7.
    pub layer: String,
    pub rules: usize,
    /// One of the paper's five configurations.
    pub paper: bool,
    /// measured, not_in_effect (a probe showed the configuration is not what it claims, so
    /// nothing was measured), or failed (setting it up or running the load failed).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The probes of the last round.
    pub probes: Vec<ProbeResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_throughput: Option<MaxThroughput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeResult {
    pub from: String,
    pub port: u16,
    pub path: String,
    pub expect: String,
    pub got: String,
    pub ok: bool,
}

/// The constant-rate runs of a configuration, all rounds merged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenLoop {
    pub requested_rps: f64,
    /// Median over rounds.
    pub achieved_rps: f64,
    pub achieved_rps_rounds: Vec<f64>,
    /// Achieved below 95% of requested in any round: latency then measures queue length.
    pub saturated: bool,
    pub completed: u64,
    pub errors: Errors,
    pub backlog: u64,
    pub status: BTreeMap<String, u64>,
    /// From each request's intended send time (coordinated-omission corrected), merged.
    pub latency_us: Latency,
    /// From the actual send (uncorrected), merged.
    pub service_time_us: Latency,
    /// `[percentile, value_us]` from 0 to 100 (log-spaced towards 100), for the plots.
    pub spectrum: Vec<(f64, u64)>,
}

/// The closed-loop runs of a configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaxThroughput {
    pub connections: usize,
    /// Median over rounds.
    pub rps: f64,
    pub rps_rounds: Vec<f64>,
    pub errors: Errors,
    pub status: BTreeMap<String, u64>,
    pub latency_us: Latency,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    /// The ratio asked for (e.g. 0.98), or null for a qualitative goal.
    pub target: Option<f64>,
    pub value: Option<f64>,
    /// null when it could not be evaluated (a configuration was not measured).
    pub met: Option<bool>,
    pub note: String,
}

/// Per-configuration accumulation over rounds.
pub struct Accum {
    pub open: Vec<Report>,
    pub closed: Vec<Report>,
}

impl Accum {
    pub fn new() -> Self {
        Accum {
            open: Vec::new(),
            closed: Vec::new(),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

type Merged = (
    Histogram<u64>,
    Histogram<u64>,
    Errors,
    BTreeMap<String, u64>,
    u64,
);

fn merge(reports: &[Report]) -> Merged {
    let mut h = demo_services::loadgen::new_histogram();
    let mut sh = demo_services::loadgen::new_histogram();
    let mut errors = Errors::default();
    let mut status = BTreeMap::new();
    let mut completed = 0;
    for r in reports {
        if let Some(pairs) = &r.histogram {
            let _ = h.add(histogram_from_pairs(pairs));
        }
        if let Some(pairs) = &r.service_histogram {
            let _ = sh.add(histogram_from_pairs(pairs));
        }
        errors.connect += r.errors.connect;
        errors.read += r.errors.read;
        errors.write += r.errors.write;
        errors.parse += r.errors.parse;
        errors.timeout += r.errors.timeout;
        for (k, v) in &r.status {
            *status.entry(k.clone()).or_insert(0) += v;
        }
        completed += r.completed;
    }
    (h, sh, errors, status, completed)
}

/// Percentiles for the spectrum plots: 0, then 1 − 10^(−k/10) up to 99.999, then 100.
pub fn spectrum(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<(f64, u64)> = (0..=50)
        .map(|k| {
            let q = 1.0 - 10f64.powf(-(k as f64) / 10.0);
            (q * 100.0, h.value_at_quantile(q))
        })
        .collect();
    v.push((100.0, h.max()));
    v
}

pub fn open_loop(reports: &[Report]) -> Option<OpenLoop> {
    let first = reports.first()?;
    let (h, sh, errors, status, completed) = merge(reports);
    let requested = first.requested_rps.unwrap_or(0.0);
    let rounds: Vec<f64> = reports.iter().map(|r| r.achieved_rps).collect();
    let saturated = reports
        .iter()
        .any(|r| r.achieved_rps < SATURATION_SHARE * r.requested_rps.unwrap_or(0.0));
    Some(OpenLoop {
        requested_rps: requested,
        achieved_rps: median(&rounds),
        achieved_rps_rounds: rounds,
        saturated,
        completed,
        errors,
        backlog: reports.iter().map(|r| r.backlog).sum(),
        status,
        latency_us: Latency::from_histogram(&h),
        service_time_us: Latency::from_histogram(&sh),
        spectrum: spectrum(&h),
    })
}

pub fn max_throughput(reports: &[Report]) -> Option<MaxThroughput> {
    let first = reports.first()?;
    let (h, _, errors, status, _) = merge(reports);
    let rounds: Vec<f64> = reports.iter().map(|r| r.achieved_rps).collect();
    Some(MaxThroughput {
        connections: first.connections,
        rps: median(&rounds),
        rps_rounds: rounds,
        errors,
        status,
        latency_us: Latency::from_histogram(&h),
    })
}

fn find<'a>(configs: &'a [ConfigResult], id: &str) -> Option<&'a ConfigResult> {
    configs
        .iter()
        .find(|c| c.id == id && c.status == "measured")
}

fn max_rps(configs: &[ConfigResult], id: &str) -> Option<f64> {
    find(configs, id)?.max_throughput.as_ref().map(|m| m.rps)
}

fn p99(configs: &[ConfigResult], id: &str) -> Option<u64> {
    find(configs, id)?.open_loop.as_ref()?.latency_us.at(99.0)
}

/// The goals of issue 8, evaluated on this run.
pub fn goals(configs: &[ConfigResult], datapath: Option<&super::datapath::Datapath>) -> Vec<Goal> {
    let mut out = Vec::new();
    let ratio_goal = |goal: &str, num: &str, den: &str, target: f64| {
        let value = match (max_rps(configs, num), max_rps(configs, den)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Goal {
            goal: goal.into(),
            target: Some(target),
            value,
            met: value.map(|v| v >= target),
            note: match value {
                Some(v) => format!(
                    "max throughput {num} / {den} = {:.1}% (target {:.0}%)",
                    v * 100.0,
                    target * 100.0
                ),
                None => format!("{num} or {den} was not measured"),
            },
        }
    };
    out.push(ratio_goal(
        "L3 policy >= 98% of no-policy max throughput",
        "l3",
        "none",
        0.98,
    ));
    out.push(ratio_goal(
        "L4 policy >= 98% of no-policy max throughput",
        "l4",
        "none",
        0.98,
    ));
    out.push(ratio_goal(
        "L7 with one rule >= 60% of no-policy max throughput",
        "l7-1",
        "none",
        0.60,
    ));
    out.push(ratio_goal(
        "L7 with forty rules >= 95% of one rule",
        "l7-40",
        "l7-1",
        0.95,
    ));
    // The lab's L7 ahead of HAProxy with equal rules: throughput and p99.
    let (lab_t, ha_t) = (max_rps(configs, "l7-40"), max_rps(configs, "haproxy-40"));
    let (lab_p, ha_p) = (p99(configs, "l7-40"), p99(configs, "haproxy-40"));
    let met = match (lab_t, ha_t, lab_p, ha_p) {
        (Some(a), Some(b), Some(c), Some(d)) => Some(a >= b && c <= d),
        _ => None,
    };
    out.push(Goal {
        goal: "Lab L7 (40 rules) ahead of HAProxy (40 ACLs) on throughput and p99".into(),
        target: None,
        value: match (lab_t, ha_t) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        },
        met,
        note: match (lab_t, ha_t, lab_p, ha_p) {
            (Some(a), Some(b), Some(c), Some(d)) => format!(
                "max throughput {a:.0} vs {b:.0} req/s; p99 at the open-loop rate {} vs {}",
                fmt_us(c),
                fmt_us(d)
            ),
            _ => "l7-40 or haproxy-40 was not measured".into(),
        },
    });
    if let Some(d) = datapath {
        out.push(d.goal());
    }
    out
}

pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// The results as Markdown: settings, the table, the goals, the datapath figures.
pub fn markdown(r: &Results) -> String {
    let s = &r.settings;
    let mut m = format!(
        "# lab bench results\n\n{} to {} on Linux {} ({} CPUs), preset `{}`.\n\n\
         Open loop: {} req/s requested over {} connections, {} threads, {} s measured after {} s \
         of warm-up; max throughput: closed loop, {} connections, {} s; {} round(s), \
         configurations alternated.\n\n",
        r.started,
        r.finished,
        r.host.kernel,
        r.host.cpus,
        r.preset,
        s.rate,
        s.connections,
        s.threads,
        s.duration_s,
        s.warmup_s,
        s.max_connections,
        s.max_duration_s,
        s.rounds,
    );
    m.push_str(
        "| Configuration | Requested | Achieved | p50 | p90 | p99 | p99.9 | Max | Max throughput | vs no policy | Errors | Note |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let base = max_rps(&r.configs, "none");
    for c in &r.configs {
        let (Some(o), Some(t)) = (&c.open_loop, &c.max_throughput) else {
            m.push_str(&format!(
                "| {} | | | | | | | | | | | **{}**: {} |\n",
                c.title,
                c.status.replace('_', " "),
                c.reason.clone().unwrap_or_default()
            ));
            continue;
        };
        let at = |p| o.latency_us.at(p).map(fmt_us).unwrap_or_default();
        let rel = base
            .filter(|b| *b > 0.0)
            .map(|b| format!("{:.1}%", t.rps / b * 100.0))
            .unwrap_or_default();
        let note = if o.saturated {
            "**saturated**: latency is queueing"
        } else {
            ""
        };
        m.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
            c.title,
            o.requested_rps,
            o.achieved_rps,
            at(50.0),
            at(90.0),
            at(99.0),
            at(99.9),
            fmt_us(o.latency_us.max_us),
            t.rps,
            rel,
            o.errors.total() + t.errors.total(),
            note
        ));
    }
    m.push_str("\n## Goals\n\n| Goal | Value | Met | |\n|---|---:|---|---|\n");
    for g in &r.goals {
        m.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            g.goal,
            g.value
                .map(|v| format!("{:.1}%", v * 100.0))
                .unwrap_or_default(),
            match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            },
            g.note
        ));
    }
    if let Some(d) = &r.datapath {
        m.push('\n');
        m.push_str(&d.markdown());
    }
    m
}
