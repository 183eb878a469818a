//! `lab bench`: the paper's experiment 2 (a hello-world HTTP server under no policy, one L3, one
//! L4, one L7 and forty L7 rules), reproduced with a sounder method and with the peers a user
//! would pick instead (iptables, nftables, HAProxy), plus datapath figures. See
//! docs/benchmarks.md for the method and the results schema.
//!
//! One invocation brings up (or reuses) its own lab instance from [`configs::MANIFEST`], then for
//! each round runs every configuration once — set it up, probe that it is in force, measure the
//! latency at a constant rate (open loop) and the maximum throughput (closed loop), tear it
//! down — rotating the order every round so drift of the machine hits all of them alike. The
//! load generator (`demo_services::loadgen`) runs inside the load-generator pod as
//! `lab load-gen --json CONFIG`, entered like `lab exec` does.
//!
//! Modules: `configs` (what each configuration installs and probes), `labctl` (driving the lab),
//! `report` (results, Markdown, goals), `plot` (SVG), `datapath` (BPF statistics, rule scaling),
//! `progress` (JSON-lines progress and cancellation), `web` (the web lab's Benchmark page: runs
//! `lab bench --quick` in the background and serves its results).

mod configs;
mod datapath;
mod labctl;
mod plot;
mod progress;
mod report;
mod scale;
pub mod web;

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use demo_services::loadgen;

use crate::paths::Paths;
use configs::{BenchConfig, Kind};
use labctl::{LabCtl, Pod};
use report::{Accum, ConfigResult, ProbeResult, Results, Settings};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// What to run: everything, the HTTP configurations only, the datapath figures only, or
    /// (not part of `all`) how the lab's costs grow with the number of pods.
    #[arg(value_parser = ["all", "http", "datapath", "scale"], default_value = "all")]
    what: String,
    /// Pod counts of `lab bench scale` (comma-separated) [default: 10,100,250,500,1000;
    /// with --quick: 10,50].
    #[arg(long, value_delimiter = ',')]
    pod_counts: Vec<usize>,
    /// A short run for CI and classrooms (under a minute).
    #[arg(long)]
    quick: bool,
    /// The paper's settings: 10,000 req/s, 2,000 connections, 4 threads, 300 s.
    #[arg(long, conflicts_with = "quick")]
    paper: bool,
    /// Requests per second of the open-loop (latency) runs.
    #[arg(long)]
    rate: Option<f64>,
    /// Connections of the open-loop runs.
    #[arg(long)]
    connections: Option<usize>,
    /// Load-generator threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds measured per open-loop run.
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up before each open-loop run (not measured).
    #[arg(long)]
    warmup: Option<f64>,
    /// Seconds per closed-loop (maximum throughput) run.
    #[arg(long)]
    max_duration: Option<f64>,
    /// Connections of the closed-loop runs.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Rounds over all configurations (each round runs each configuration once).
    #[arg(long)]
    rounds: Option<usize>,
    /// Only these configurations (comma-separated ids: none,l3,l4,l7-1,l7-40,iptables-l3,
    /// iptables-l4,nftables-l3,nftables-l4,haproxy-40).
    #[arg(long, value_delimiter = ',')]
    configs: Vec<String>,
    /// Rule counts of the datapath figures (comma-separated).
    #[arg(long, value_delimiter = ',')]
    rule_counts: Vec<usize>,
    /// Where to write results.json, results.md and the SVG plots
    /// [default: ./bench-results/<timestamp>/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The lab instance the bench uses (brought up if it is not running).
    #[arg(long, default_value = "bench")]
    bench_instance: String,
    /// Leave the bench lab up afterwards (it is reused by the next run).
    #[arg(long)]
    keep: bool,
    /// Append progress to FILE as JSON lines, one per step (the web lab's progress bar; the
    /// format is in docs/benchmarks.md).
    #[arg(long, value_name = "FILE")]
    progress_json: Option<PathBuf>,
}

/// The settings of one run, from a preset and the flags.
struct Plan {
    preset: &'static str,
    rate: f64,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
    max_duration: Duration,
    max_connections: usize,
    rounds: usize,
    probe_timeout: Duration,
    datapath: datapath::Plan,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl Plan {
    fn from_args(a: &BenchArgs) -> Plan {
        let mut p = if a.quick {
            Plan {
                preset: "quick",
                rate: 500.0,
                connections: 20,
                threads: 1,
                duration: secs(1.5),
                warmup: secs(0.3),
                max_duration: secs(1.0),
                max_connections: 20,
                rounds: 1,
                probe_timeout: secs(0.5),
                datapath: datapath::Plan {
                    connections: 8,
                    duration: secs(1.0),
                    rule_counts: vec![1, 1000],
                },
            }
        } else if a.paper {
            Plan {
                preset: "paper",
                rate: 10_000.0,
                connections: 2000,
                threads: 4,
                duration: secs(300.0),
                warmup: secs(10.0),
                max_duration: secs(60.0),
                max_connections: 2000,
                rounds: 1,
                probe_timeout: secs(2.0),
                datapath: datapath::Plan {
                    connections: 8,
                    duration: secs(10.0),
                    rule_counts: vec![1, 10, 100, 1000, 10_000],
                },
            }
        } else {
            Plan {
                preset: "default",
                rate: 2000.0,
                connections: 100,
                threads: 2,
                duration: secs(10.0),
                warmup: secs(2.0),
                max_duration: secs(5.0),
                max_connections: 50,
                rounds: 3,
                probe_timeout: secs(1.0),
                datapath: datapath::Plan {
                    connections: 8,
                    duration: secs(4.0),
                    rule_counts: vec![1, 10, 100, 1000, 10_000],
                },
            }
        };
        let custom = a.rate.is_some()
            || a.connections.is_some()
            || a.threads.is_some()
            || a.duration.is_some()
            || a.rounds.is_some();
        if let Some(v) = a.rate {
            p.rate = v;
        }
        if let Some(v) = a.connections {
            p.connections = v;
        }
        if let Some(v) = a.threads {
            p.threads = v;
        }
        if let Some(v) = a.duration {
            p.duration = secs(v);
        }
        if let Some(v) = a.warmup {
            p.warmup = secs(v);
        }
        if let Some(v) = a.max_duration {
            p.max_duration = secs(v);
        }
        if let Some(v) = a.max_connections {
            p.max_connections = v;
        }
        if let Some(v) = a.rounds {
            p.rounds = v.max(1);
        }
        if !a.rule_counts.is_empty() {
            p.datapath.rule_counts = a.rule_counts.clone();
        }
        if custom {
            p.preset = match p.preset {
                "quick" => "quick+custom",
                "paper" => "paper+custom",
                _ => "custom",
            };
        }
        p
    }
}

/// The bench pods.
pub struct Ctx {
    pub server: Pod,
    pub client: Pod,
    pub outsider: Pod,
    tmp: PathBuf,
    probe_timeout: Duration,
}

/// `lab load-gen --json CONFIG`: runs in the load-generator pod, prints the report as JSON.
pub fn load_gen(json: &str) -> Result<i32> {
    let cfg: loadgen::Config = serde_json::from_str(json).context("load-gen --json")?;
    let report = loadgen::run(&cfg)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(0)
}

/// Runs the load generator in the client pod against the server.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_load(
    lab: &LabCtl,
    ctx: &Ctx,
    port: u16,
    rate: Option<f64>,
    connections: usize,
    threads: usize,
    duration: Duration,
    warmup: Duration,
) -> Result<loadgen::Report> {
    let mut cfg = loadgen::Config::new(std::net::SocketAddr::from((ctx.server.ip, port)));
    cfg.rate = rate;
    cfg.connections = connections;
    cfg.threads = threads;
    cfg.duration_ms = duration.as_millis() as u64;
    cfg.warmup_ms = warmup.as_millis() as u64;
    cfg.host = "server".into();
    cfg.histogram = true;
    let limit = duration
        + warmup
        + Duration::from_millis(cfg.drain_ms + cfg.connect_timeout_ms)
        + Duration::from_secs(30);
    let argv = vec![
        "lab".to_string(),
        "load-gen".into(),
        "--json".into(),
        serde_json::to_string(&cfg)?,
    ];
    let ran = lab.exec_cancellable(&ctx.client, &argv, limit)?;
    if ran.timed_out && progress::cancelled() {
        bail!("cancelled");
    }
    if ran.timed_out {
        bail!("the load generator did not finish in {limit:?}");
    }
    serde_json::from_str(ran.stdout.trim()).with_context(|| {
        format!(
            "the load generator failed ({:?}): {}{}",
            ran.code, ran.stdout, ran.stderr
        )
    })
}

/// What `curl` in `from` sees for `port` and `path` on the server.
fn probe(lab: &LabCtl, ctx: &Ctx, from: &Pod, port: u16, path: &str) -> String {
    let t = ctx.probe_timeout.as_secs_f64();
    let argv: Vec<String> = [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        &format!("{t:.1}"),
        &format!("http://{}:{port}{path}", ctx.server.ip),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match lab.exec(from, &argv, ctx.probe_timeout + Duration::from_secs(5)) {
        Ok(r) => match r.code {
            Some(0) => r.stdout.trim().to_owned(),
            Some(28) => "dropped".into(),
            Some(7) => "refused".into(),
            Some(c) => format!("curl exit {c}"),
            None => "no answer".into(),
        },
        Err(e) => format!("error: {e:#}"),
    }
}

fn run_probes(lab: &LabCtl, ctx: &Ctx, c: &BenchConfig) -> Vec<ProbeResult> {
    let probes = c.probes();
    std::thread::scope(|s| {
        let handles: Vec<_> = probes
            .iter()
            .map(|p| {
                let from = match p.from {
                    "outsider" => &ctx.outsider,
                    _ => &ctx.client,
                };
                s.spawn(move || probe(lab, ctx, from, p.port, p.path))
            })
            .collect();
        probes
            .iter()
            .zip(handles)
            .map(|(p, h)| {
                let got = h.join().unwrap_or_else(|_| "panicked".into());
                ProbeResult {
                    from: p.from.into(),
                    port: p.port,
                    path: p.path.into(),
                    expect: p.expect.describe(),
                    ok: got == p.expect.describe(),
                    got,
                }
            })
            .collect()
    })
}

/// The client can reach the server (a quick check after installing rules).
pub(crate) fn expect_ok(lab: &LabCtl, ctx: &Ctx) -> Result<()> {
    let got = probe(lab, ctx, &ctx.client, configs::ECHO_PORT, "/");
    if got != "200" {
        bail!("the client's GET / got {got}, not 200");
    }
    Ok(())
}

/// Loads an `iptables-restore` or `nft -f` script into the server pod's network namespace, which
/// must have no rules yet (the lab installs none there).
pub(crate) fn load_firewall(lab: &LabCtl, ctx: &Ctx, tool: &str, script: &str) -> Result<()> {
    let existing = lab.exec_ok(&ctx.server, &["nft", "list", "ruleset"])?;
    if !existing.trim().is_empty() {
        bail!(
            "the server pod's network namespace already has firewall rules; not touching them:\n{existing}"
        );
    }
    let file = ctx.tmp.join(format!("{tool}.rules"));
    std::fs::write(&file, script)?;
    let f = file.display().to_string();
    match tool {
        "iptables" => lab.exec_ok(&ctx.server, &["iptables-restore", &f])?,
        _ => lab.exec_ok(&ctx.server, &["nft", "-f", &f])?,
    };
    Ok(())
}

/// Removes every firewall rule of the server pod's network namespace (only the bench puts any
/// there).
pub(crate) fn flush_firewall(lab: &LabCtl, ctx: &Ctx) {
    if let Err(e) = lab.exec_ok(&ctx.server, &["nft", "flush", "ruleset"]) {
        eprintln!("[bench] warning: flushing the server pod's firewall rules: {e:#}");
    }
}

/// Installs a configuration; returns the HAProxy process when there is one.
fn setup(lab: &LabCtl, ctx: &Ctx, plan: &Plan, c: &BenchConfig) -> Result<Option<Child>> {
    if let Some(policy) = c.policy() {
        lab.apply(&format!("bench-{}.yaml", c.id), &policy)?;
    }
    match c.kind {
        Kind::Iptables => load_firewall(lab, ctx, "iptables", &c.firewall(ctx.client.ip).unwrap())?,
        Kind::Nftables => load_firewall(lab, ctx, "nft", &c.firewall(ctx.client.ip).unwrap())?,
        Kind::Haproxy => {
            let cfg = ctx.tmp.join("haproxy.cfg");
            std::fs::write(
                &cfg,
                configs::haproxy_config(
                    c.rules,
                    plan.connections.max(plan.max_connections),
                    plan.threads.max(1),
                ),
            )?;
            let argv: Vec<String> = ["haproxy", "-f", &cfg.display().to_string(), "-db"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut child = lab.spawn(&ctx.server, &argv, &ctx.tmp.join("haproxy.log"))?;
            // Ready when it answers.
            for _ in 0..100 {
                if probe(lab, ctx, &ctx.client, configs::HAPROXY_PORT, "/") == "200" {
                    return Ok(Some(child));
                }
                if let Some(status) = child.try_wait()? {
                    let log =
                        std::fs::read_to_string(ctx.tmp.join("haproxy.log")).unwrap_or_default();
                    bail!("haproxy exited ({status}): {log}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            bail!("haproxy did not answer within 5 s");
        }
        Kind::Baseline | Kind::Cilium => {}
    }
    Ok(None)
}

fn teardown(lab: &LabCtl, ctx: &Ctx, c: &BenchConfig, child: Option<Child>) {
    if let Some(mut child) = child {
        let _ = child.kill();
        let _ = child.wait();
    }
    match c.kind {
        Kind::Cilium => {
            if let Err(e) = lab.delete_policies() {
                eprintln!("[bench] warning: deleting the bench policy: {e:#}");
            }
        }
        Kind::Iptables | Kind::Nftables => flush_firewall(lab, ctx),
        _ => {}
    }
}

/// One round of one configuration: probes, then the two runs.
fn round(
    lab: &LabCtl,
    ctx: &Ctx,
    plan: &Plan,
    c: &BenchConfig,
    acc: &mut Accum,
    result: &mut ConfigResult,
) {
    let child = match setup(lab, ctx, plan, c) {
        Ok(child) => child,
        Err(e) => {
            result.status = "failed".into();
            result.reason = Some(format!("setting up: {e:#}"));
            teardown(lab, ctx, c, None);
            return;
        }
    };
    result.probes = run_probes(lab, ctx, c);
    let bad: Vec<&ProbeResult> = result.probes.iter().filter(|p| !p.ok).collect();
    if !bad.is_empty() {
        let what = bad
            .iter()
            .map(|p| {
                format!(
                    "{} → :{}{} got {}, expected {}",
                    p.from, p.port, p.path, p.got, p.expect
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let l7_missing = bad.iter().any(|p| p.expect == "403" && p.got == "200");
        result.status = "not_in_effect".into();
        result.reason = Some(if l7_missing {
            format!("L7 not enforced: {what}")
        } else {
            format!("not in effect: {what}")
        });
        eprintln!("[bench]   {}: {}", c.id, result.reason.as_deref().unwrap());
        teardown(lab, ctx, c, child);
        return;
    }
    let open = run_load(
        lab,
        ctx,
        c.port(),
        Some(plan.rate),
        plan.connections,
        plan.threads,
        plan.duration,
        plan.warmup,
    );
    let closed = open.as_ref().ok().map(|_| {
        run_load(
            lab,
            ctx,
            c.port(),
            None,
            plan.max_connections,
            plan.threads,
            plan.max_duration,
            plan.warmup.min(secs(1.0)),
        )
    });
    teardown(lab, ctx, c, child);
    match (open, closed) {
        (Ok(o), Some(Ok(m))) => {
            eprintln!(
                "[bench]   {:<12} {:>8.0} of {:.0} req/s{}, p50 {}, p99 {}, max {}; max throughput {:.0} req/s",
                c.id,
                o.achieved_rps,
                plan.rate,
                if o.achieved_rps < report::SATURATION_SHARE * plan.rate {
                    " (SATURATED)"
                } else {
                    ""
                },
                report::fmt_us(o.latency.at(50.0).unwrap_or(0)),
                report::fmt_us(o.latency.at(99.0).unwrap_or(0)),
                report::fmt_us(o.latency.max_us),
                m.achieved_rps
            );
            acc.open.push(o);
            acc.closed.push(m);
            if result.status != "failed" {
                result.status = "measured".into();
            }
        }
        (Err(e), _) | (_, Some(Err(e))) => {
            result.status = "failed".into();
            result.reason = Some(format!("load run: {e:#}"));
            eprintln!("[bench]   {}: failed: {e:#}", c.id);
        }
        (Ok(_), None) => unreachable!("closed runs when open succeeded"),
    }
}

fn timestamp_dir() -> String {
    let t = model::time::rfc3339::now();
    let t = t.split('.').next().unwrap_or(&t).trim_end_matches('Z');
    t.replace([':', '-'], "").replace('T', "-")
}

fn check_tools(kinds: &[Kind]) -> Result<()> {
    let need: Vec<&str> = ["curl", "nft", "iptables-restore", "haproxy"]
        .into_iter()
        .filter(|t| match *t {
            "iptables-restore" => kinds.contains(&Kind::Iptables),
            "haproxy" => kinds.contains(&Kind::Haproxy),
            _ => true,
        })
        .collect();
    let path = std::env::var("PATH").unwrap_or_default();
    let missing: Vec<&str> = need
        .into_iter()
        .filter(|t| {
            !path
                .split(':')
                .chain(["/usr/sbin", "/sbin"])
                .any(|d| Path::new(d).join(t).exists())
        })
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (scripts/setup.sh installs them)",
            missing.join(", ")
        );
    }
    Ok(())
}

pub fn run(_paths: &Paths, args: BenchArgs) -> Result<i32> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("`lab bench` brings up a lab and enters pods: run it as root (sudo)");
    }
    if args.what == "scale" {
        return run_scale(&args);
    }
    let plan = Plan::from_args(&args);
    let all = configs::all();
    let selected: Vec<BenchConfig> = if args.configs.is_empty() {
        all.clone()
    } else {
        for id in &args.configs {
            if !all.iter().any(|c| c.id == id) {
                bail!(
                    "unknown configuration {id:?}; known: {}",
                    all.iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
                );
            }
        }
        all.iter()
            .filter(|c| args.configs.iter().any(|id| id == c.id))
            .cloned()
            .collect()
    };
    let http = args.what != "datapath";
    let dp = args.what != "http";
    let mut kinds: Vec<Kind> = selected.iter().map(|c| c.kind).collect();
    if dp {
        kinds.push(Kind::Iptables);
    }
    check_tools(&kinds)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-results").join(timestamp_dir()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let tmp = std::env::temp_dir().join(format!("lab-bench-{}", args.bench_instance));
    std::fs::create_dir_all(&tmp)?;
    let manifest = tmp.join("bench.yaml");
    std::fs::write(&manifest, configs::MANIFEST)?;

    let steps = if http {
        plan.rounds * selected.len()
    } else {
        0
    } + if dp {
        datapath::steps(&plan.datapath)
    } else {
        0
    };
    progress::init(args.progress_json.as_deref(), steps)?;
    progress::emit(
        "lab",
        serde_json::json!({"message": format!("bringing up the bench lab {:?}", args.bench_instance)}),
    );

    let mut lab = LabCtl::new(&args.bench_instance)?;
    let up = lab.ensure_up(&manifest, &["server", "loadgen", "outsider"]);
    let result = up.and_then(|()| {
        if progress::cancelled() {
            bail!("cancelled");
        }
        let ctx = Ctx {
            server: lab.pod("server")?,
            client: lab.pod("loadgen")?,
            outsider: lab.pod("outsider")?,
            tmp: tmp.clone(),
            probe_timeout: plan.probe_timeout,
        };
        measure_all(&lab, &ctx, &plan, &selected, http, dp, &out)
    });
    if lab.started_here && !args.keep {
        eprintln!("[bench] taking the bench lab down");
        progress::emit(
            "cleanup",
            serde_json::json!({"message": format!("taking the bench lab {:?} down", args.bench_instance)}),
        );
        if let Err(e) = lab.down() {
            eprintln!("[bench] warning: lab down: {e:#}");
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            let phase = if progress::cancelled() {
                "cancelled"
            } else {
                "failed"
            };
            progress::emit(phase, serde_json::json!({"error": format!("{e:#}")}));
            return Err(e);
        }
    };
    progress::emit(
        "done",
        serde_json::json!({"out": out.display().to_string(), "message": "results written"}),
    );
    println!("{}", report::markdown(&results));
    println!("Results: {}", out.display());
    Ok(0)
}

fn run_scale(args: &BenchArgs) -> Result<i32> {
    let counts = match (&args.pod_counts[..], args.quick) {
        ([], true) => vec![10, 50],
        ([], false) => vec![10, 100, 250, 500, 1000],
        (given, _) => given.to_vec(),
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-results").join(timestamp_dir()));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let instance = if args.bench_instance == "bench" {
        "bench-scale"
    } else {
        &args.bench_instance
    };
    scale::run(instance, &counts, &out)?;
    println!("Results: {}", out.display());
    Ok(0)
}

fn measure_all(
    lab: &LabCtl,
    ctx: &Ctx,
    plan: &Plan,
    selected: &[BenchConfig],
    http: bool,
    dp: bool,
    out: &Path,
) -> Result<Results> {
    let started = model::time::rfc3339::now();
    // A clean slate, also when the lab is reused.
    if lab.policy_count()? > 0 {
        lab.delete_policies()?;
    }
    flush_firewall(lab, ctx);
    expect_ok(lab, ctx).context("the bench lab does not answer")?;
    let mut accs: Vec<Accum> = selected.iter().map(|_| Accum::new()).collect();
    let mut results: Vec<ConfigResult> = selected
        .iter()
        .map(|c| ConfigResult {
            id: c.id.into(),
            title: c.title.into(),
            kind: c.kind.name().into(),
            layer: c.layer.into(),
            rules: c.rules,
            paper: c.paper,
            status: "skipped".into(),
            reason: None,
            probes: Vec::new(),
            open_loop: None,
            max_throughput: None,
        })
        .collect();
    if http {
        let n = selected.len();
        for r in 0..plan.rounds {
            eprintln!("[bench] round {}/{}", r + 1, plan.rounds);
            for k in 0..n {
                if progress::cancelled() {
                    bail!("cancelled");
                }
                // Rotate the order each round: no configuration always runs first or last.
                let i = (k + r) % n;
                progress::step(
                    "http",
                    serde_json::json!({
                        "round": r + 1, "rounds": plan.rounds, "config": k + 1, "configs": n,
                        "id": selected[i].id, "title": selected[i].title,
                        "message": format!("{} (configuration {} of {n}, round {} of {})",
                            selected[i].title, k + 1, r + 1, plan.rounds),
                    }),
                );
                if results[i].status == "not_in_effect" {
                    continue;
                }
                round(lab, ctx, plan, &selected[i], &mut accs[i], &mut results[i]);
            }
        }
        for (res, acc) in results.iter_mut().zip(&accs) {
            if res.status == "measured" {
                res.open_loop = report::open_loop(&acc.open);
                res.max_throughput = report::max_throughput(&acc.closed);
            }
        }
    }
    let datapath = if dp {
        Some(datapath::run(lab, ctx, &plan.datapath)?)
    } else {
        None
    };
    let goals = report::goals(&results, datapath.as_ref());
    let results = Results {
        schema: report::SCHEMA.into(),
        started,
        finished: model::time::rfc3339::now(),
        host: report::Host {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            lab_version: env!("CARGO_PKG_VERSION").into(),
        },
        preset: plan.preset.into(),
        settings: Settings {
            rate: plan.rate,
            connections: plan.connections,
            threads: plan.threads,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            max_duration_s: plan.max_duration.as_secs_f64(),
            max_connections: plan.max_connections,
            rounds: plan.rounds,
            configs: if http {
                selected.iter().map(|c| c.id.to_string()).collect()
            } else {
                Vec::new()
            },
        },
        configs: if http { results } else { Vec::new() },
        datapath,
        goals,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(out.join("results.md"), report::markdown(&results))?;
    plot::all(&results, out)?;
    Ok(results)
}
