//! The command line, shaped like kubectl: `up`, `down`, `get`, `describe`, `exec`, `logs`,
//! `policy apply|get|delete`, `observe`, `ship`. Output is a table by default, or `-o json|yaml`.

use std::{
    collections::BTreeMap,
    io::{BufRead, Seek, Write},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use model::{
    ApplyRequest, ApplyResult, AuditFile, AuditMode, AuditRequest, AuditSwitch, ConntrackEntry,
    DeleteRequest, DeleteResult, Endpoint, EndpointRef, Flow, FlowFilter, Host, Identity,
    LimitStatus, Move, Pod, PodContext, PolicyAudit, PolicyEntry, PrefilterChange, PrefilterState,
    Service, ShipCommand, ShipRequest, ShipResult, Status,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{client::Client, paths::Paths, spawn::InPod, up};

#[derive(Parser)]
#[command(name = "lab", version, about = "A Kubernetes-style cluster with an eBPF CiliumNetworkPolicy enforcer, on one VM", long_about = None)]
struct Cli {
    /// Which lab to talk to (several can run side by side).
    #[arg(long, global = true, env = "LAB_INSTANCE", default_value = crate::paths::DEFAULT_INSTANCE)]
    instance: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Build the cluster (the Star Wars demo by default) and serve the web lab.
    Up {
        /// Kubernetes manifests (Pod, Deployment, Service, Namespace, ServiceAccount) instead of the default cluster.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Run in the background and return once the lab is up.
        #[arg(short, long)]
        detach: bool,
        /// Where the web lab listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        web: SocketAddr,
        /// Also load lessons and exercises from this directory (read at every page load; a file
        /// named like a built-in one replaces it).
        #[arg(long)]
        lessons: Option<PathBuf>,
        #[arg(long, hide = true)]
        daemon_child: bool,
        /// Build everything anew even if a previous run of this cluster can be taken over.
        #[arg(long)]
        fresh: bool,
        /// The node's pod address range, e.g. 10.244.0.0/22 (default: 10.244.0.0/24, widened
        /// up to /16 when the manifests have more pods than it holds).
        #[arg(long, value_name = "CIDR")]
        pod_cidr: Option<String>,
    },
    /// Stop the lab and remove everything it created.
    Down,
    /// Show whether the lab is up and where.
    Status,
    /// List resources: pods, services, endpoints, identities, policies.
    Get {
        resource: String,
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one pod in detail.
    Describe { resource: String, name: String },
    /// Run a program inside a pod: `lab exec xwing -- curl -s deathstar/v1`.
    Exec {
        pod: String,
        /// Accepted for kubectl compatibility; stdin and the terminal are always passed through.
        #[arg(short = 'i', long)]
        stdin: bool,
        #[arg(short = 't', long)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's log.
    Logs {
        pod: String,
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Network policies (Cilium and Kubernetes): apply, get, delete, audit.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Flows, like `hubble observe`.
    Observe {
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        pod: Option<String>,
        #[arg(long)]
        verdict: Option<String>,
        #[arg(long = "type")]
        flow_type: Option<String>,
        #[arg(long, default_value = "20")]
        last: usize,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Fly a ship: land, survey, fire, fetch-logs STORE, http METHOD URL, connect HOST:PORT, or
    /// flood [CONNECTIONS] [SECONDS] (hold idle connections to the Deathstar).
    Ship {
        pod: String,
        #[arg(value_parser = ["land", "survey", "fire", "fetch-logs", "http", "connect", "flood"])]
        action: String,
        args: Vec<String>,
        #[arg(long, default_value = "5")]
        timeout: f64,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The XDP prefilter on the node's external interface: a deny list of source CIDRs.
    #[command(subcommand)]
    Prefilter(PrefilterCommand),
    /// Check policies (files, the running lab, or both) for the mistakes behind real exposures:
    /// wildcard CIDRs, unguarded NodePorts, a prefilter bypass, rules that select nothing,
    /// shadowed rules, L7 rules cancelled by L4 allows. Exits 1 on findings at or above
    /// `--fail-on`.
    Audit {
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Only the files, even if a lab is running.
        #[arg(long)]
        offline: bool,
        #[arg(long, default_value = "medium", value_parser = ["low", "medium", "high", "critical"])]
        fail_on: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The connectivity matrix: every ordered pair of pods x the ports they declare, as the
    /// policies in force predict it; with `--probe`, also measured with real traffic (a cell
    /// where the two disagree is shown as `!`). Exits 1 when they disagree.
    Matrix {
        /// Send real traffic for every cell (TCP handshakes, UDP datagrams answered).
        #[arg(long)]
        probe: bool,
        /// Only pods of this namespace (repeatable).
        #[arg(short, long = "namespace")]
        namespaces: Vec<String>,
        /// A column, PROTOCOL/PORT (repeatable; default: every declared container port).
        #[arg(long = "port", value_parser = model::MatrixPort::parse)]
        ports: Vec<model::MatrixPort>,
        /// Show the rule deciding each blocked cell.
        #[arg(long)]
        explain: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Prometheus metrics (Cilium's names).
    Metrics,
    /// Connection-tracking entries of the datapath.
    Conntrack,
    #[command(hide = true)]
    Workload {
        kind: String,
        #[arg(long)]
        config: String,
    },
    /// Calls the control API directly (for debugging and tests): `lab debug-api POST /api/x/proxy/stop`.
    #[command(hide = true, name = "debug-api")]
    DebugApi {
        method: String,
        path: String,
        body: Option<String>,
    },
    #[command(hide = true, name = "ship-move")]
    ShipMove {
        #[arg(long)]
        json: String,
    },
    /// Benchmark the paper's five configurations and their iptables/nftables/HAProxy peers.
    Bench(crate::bench::BenchArgs),
    /// Inside a pod: run the load generator with a JSON config and print its report as JSON.
    #[command(hide = true, name = "load-gen")]
    LoadGen {
        #[arg(long)]
        json: String,
    },
}

#[derive(Subcommand)]
enum PrefilterCommand {
    /// Add CIDRs to the deny list.
    Update {
        #[arg(long = "cidr", required = true)]
        cidrs: Vec<String>,
    },
    /// Remove CIDRs from the deny list.
    Delete {
        #[arg(long = "cidr", required = true)]
        cidrs: Vec<String>,
    },
    /// Show the deny list and any bypassed NodePort.
    List,
    /// UNSAFE, for the incident lesson: make a NodePort skip all policy (the story's mistake).
    Bypass {
        #[arg(long)]
        node_port: u16,
        /// Confirm that you want connections to this NodePort to skip every policy.
        #[arg(long = "unsafe")]
        unsafe_ok: bool,
        /// Turn the bypass off again.
        #[arg(long)]
        off: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Apply CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, Kubernetes NetworkPolicy,
    /// CiliumCIDRGroup and ConnectionLimit from files, a directory or `-`.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Validate and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the policies in force (and the CIDR groups and limits): all, `KIND` (`cnp`, `ccnp`,
    /// `ccg`, `connectionlimit`), `NAME`, `KIND NAME` or `KIND/NAME`.
    Get {
        #[arg(num_args = 0..=2, value_name = "[KIND] NAME")]
        target: Vec<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete policies (and CIDR groups, limits) by name (`NAME`, `KIND NAME` or `KIND/NAME`), by
    /// file, or all of them.
    Delete {
        #[arg(num_args = 0..=2, value_name = "[KIND] NAME")]
        target: Vec<String>,
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Lab-wide audit mode: every would-be drop is forwarded and reported as AUDIT.
    AuditMode {
        #[arg(value_parser = ["on", "off"])]
        mode: String,
    },
    /// Put one policy in audit mode (would-be drops are forwarded and reported as AUDIT), or back.
    Audit {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        mode: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let paths = Paths::new(&cli.instance);
    let quiet_tracing = !matches!(
        cli.command,
        Command::Workload { .. } | Command::ShipMove { .. }
    );
    init_tracing(quiet_tracing);
    match run(&paths, cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LAB_LOG").unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(paths: &Paths, command: Command) -> Result<i32> {
    match command {
        Command::Up {
            files,
            detach,
            web,
            lessons,
            daemon_child,
            fresh,
            pod_cidr,
        } => {
            up::up(
                paths,
                up::UpOptions {
                    files,
                    web,
                    detach,
                    lessons,
                    daemon_child,
                    fresh,
                    pod_cidr,
                },
            )?;
            Ok(0)
        }
        Command::Down => {
            up::down(paths)?;
            Ok(0)
        }
        Command::Audit {
            files,
            offline,
            fail_on,
            output,
        } => audit(paths, &files, offline, &fail_on, output),
        Command::Workload { kind, config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::workloads::run(&kind, &config))?;
            Ok(0)
        }
        Command::ShipMove { json } => ship_move(&json),
        Command::Bench(args) => crate::bench::run(paths, args),
        Command::LoadGen { json } => crate::bench::load_gen(&json),
        other => {
            // Like kubectl, a client command piped into `head` ends quietly when the pipe
            // closes, instead of failing to print (Rust ignores SIGPIPE by default).
            // SAFETY: no other thread exists yet, and SIG_DFL needs no handler code.
            let _ = unsafe {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGPIPE,
                    nix::sys::signal::SigHandler::SigDfl,
                )
            };
            let rt = runtime()?;
            rt.block_on(client_command(paths, other))
        }
    }
}

async fn client_command(paths: &Paths, command: Command) -> Result<i32> {
    let client = Client::new(paths);
    match command {
        Command::Status => {
            let s: Status = client.get("/api/status").await?;
            println!(
                "Lab {:?} is up (pid {}): {} pods (range {}), {} services, {} policies.\n  Web lab: {}",
                s.instance,
                s.pid,
                s.pods,
                s.pod_range,
                s.services,
                s.policies,
                s.web.as_deref().unwrap_or("-")
            );
        }
        Command::Get {
            resource,
            name,
            output,
            namespace,
            all_namespaces,
        } => {
            get(
                &client,
                &resource,
                name.as_deref(),
                output,
                namespace.as_deref(),
                all_namespaces,
            )
            .await?;
        }
        Command::Describe { resource, name } => describe(&client, &resource, &name).await?,
        Command::Exec { pod, command, .. } => return exec(&client, &pod, &command).await,
        Command::Logs { pod, follow, tail } => logs(&client, &pod, follow, tail).await?,
        Command::Policy(p) => return policy(&client, p).await,
        Command::Observe {
            follow,
            pod,
            verdict,
            flow_type,
            last,
            output,
        } => {
            let filter = FlowFilter {
                pod,
                verdict,
                flow_type,
                limit: Some(last),
                since: None,
            };
            observe(&client, follow, &filter, output).await?
        }
        Command::Ship {
            pod,
            action,
            args,
            timeout,
            user,
            password,
            output,
        } => {
            return ship(
                &client, &pod, &action, &args, timeout, user, password, output,
            )
            .await;
        }
        Command::Prefilter(cmd) => {
            let change = match cmd {
                PrefilterCommand::Update { cidrs } => Some(PrefilterChange::Update { cidrs }),
                PrefilterCommand::Delete { cidrs } => Some(PrefilterChange::Delete { cidrs }),
                PrefilterCommand::Bypass {
                    node_port,
                    unsafe_ok,
                    off,
                } => Some(PrefilterChange::Bypass {
                    node_port,
                    enabled: !off,
                    unsafe_ok,
                }),
                PrefilterCommand::List => None,
            };
            let state: PrefilterState = match change {
                None => client.get("/api/x/prefilter").await?,
                Some(change) => client.post("/api/x/prefilter", &change).await?,
            };
            println!("{}", state.headline());
            for p in &state.bypass_node_ports {
                println!("  {}", PrefilterState::bypass_warning(*p));
            }
        }
        Command::Matrix {
            probe,
            namespaces,
            ports,
            explain,
            output,
        } => {
            let req = model::MatrixRequest {
                probe,
                namespaces,
                ports,
            };
            let m: model::Matrix = client.post("/api/matrix", &req).await?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                print_matrix(&m, probe, explain);
            }
            return Ok(i32::from(m.disagreements > 0));
        }
        Command::Metrics => print!("{}", client.text("/metrics").await?),
        Command::DebugApi { method, path, body } => {
            let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
            // Any route, any JSON: this command is the API's raw edge.
            let body: Option<serde_json::Value> = match body {
                Some(b) => Some(serde_json::from_str(&b)?),
                None if method == Method::POST => Some(serde_json::json!({})),
                None => None,
            };
            let answer: serde_json::Value = client.call(method, &path, body.as_ref()).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Command::Conntrack => {
            let entries: Vec<ConntrackEntry> = client.get("/api/x/conntrack").await?;
            let rows: Vec<Vec<String>> = entries
                .into_iter()
                .map(|e| {
                    vec![
                        e.direction,
                        e.protocol.to_string(),
                        e.source,
                        e.destination,
                        e.packets.to_string(),
                        e.bytes.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "DIRECTION",
                    "PROTO",
                    "SOURCE",
                    "DESTINATION",
                    "PACKETS",
                    "BYTES",
                ],
                rows,
            );
        }
        Command::Up { .. }
        | Command::Down
        | Command::Audit { .. }
        | Command::Workload { .. }
        | Command::ShipMove { .. }
        | Command::Bench(_)
        | Command::LoadGen { .. } => unreachable!(),
    }
    Ok(0)
}

fn print_matrix(m: &model::Matrix, probed: bool, explain: bool) {
    let title = if probed { "probed" } else { "predicted" };
    println!("Connectivity ({title}): rows send, columns receive; `.` passes, `X` is dropped.");
    print!("{}", m.render(|c| c.probed.or(Some(c.predicted))));
    if probed {
        if m.disagreements == 0 {
            println!(
                "Prediction and datapath agree on all {} cells.",
                m.cells.len()
            );
        } else {
            println!(
                "`!`: {} cells where the datapath did not do what the policy state predicts (a bug of the lab):",
                m.disagreements
            );
        }
    }
    for c in &m.cells {
        let disagrees = c.probed.is_some_and(|p| p != c.predicted);
        if !(disagrees || explain && !c.predicted) {
            continue;
        }
        let probed = match c.probed {
            Some(true) => ", probe passed",
            Some(false) => ", probe dropped",
            None => "",
        };
        println!(
            "  {} -> {} {}: predicted {}{probed}; egress: {}; ingress: {}",
            m.pods[c.from],
            m.pods[c.to],
            m.ports[c.port],
            if c.predicted { "pass" } else { "drop" },
            c.egress.as_deref().unwrap_or("not enforced"),
            c.ingress.as_deref().unwrap_or("not enforced"),
        );
    }
}

/// An optional value as kubectl shows it.
fn or_none(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "<none>".into(), |v| v.to_string())
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_structured(v: &impl Serialize, output: Output) -> Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn labels_str(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Time since `t`, as kubectl's AGE column: `42s`, `5m`, `3h`.
fn age(t: Option<SystemTime>) -> String {
    let Some(d) = t.and_then(|t| SystemTime::now().duration_since(t).ok()) else {
        return "-".into();
    };
    let d = d.as_secs();
    if d < 120 {
        format!("{d}s")
    } else if d < 7200 {
        format!("{}m", d / 60)
    } else {
        format!("{}h", d / 3600)
    }
}

async fn get(
    client: &Client,
    resource: &str,
    name: Option<&str>,
    output: Output,
    namespace: Option<&str>,
    all: bool,
) -> Result<()> {
    let ns_ok = |ns: Option<&str>| {
        all || ns.is_none() || ns.unwrap_or("default") == namespace.unwrap_or("default")
    };
    let name_ok = |n: &str| name.is_none_or(|want| n == want);
    match resource {
        "pods" | "pod" | "po" => {
            let keep = |p: &Pod| ns_ok(Some(&p.namespace)) && name_ok(&p.name);
            let Some(items) = listing(client, "/api/pods", "pods", name, output, keep).await?
            else {
                return Ok(());
            };
            let mut headers = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"];
            if all {
                headers.insert(0, "NAMESPACE");
            }
            if output == Output::Wide {
                headers.extend(["IDENTITY", "NODE-IFACE", "NETNS", "LABELS"]);
            }
            let rows = items
                .iter()
                .map(|p| {
                    let mut r = vec![
                        p.name.clone(),
                        if p.ready { "1/1" } else { "0/1" }.into(),
                        format!("{:?}", p.phase),
                        p.restarts.to_string(),
                        age(p.started_at),
                        p.ip.to_string(),
                    ];
                    if all {
                        r.insert(0, p.namespace.clone());
                    }
                    if output == Output::Wide {
                        r.extend([
                            p.identity.to_string(),
                            p.node_interface.clone(),
                            p.netns.clone(),
                            labels_str(&p.labels),
                        ]);
                    }
                    r
                })
                .collect();
            table(&headers, rows);
        }
        "services" | "service" | "svc" => {
            let keep = |s: &Service| ns_ok(Some(&s.namespace)) && name_ok(&s.name);
            let Some(items) =
                listing(client, "/api/services", "services", name, output, keep).await?
            else {
                return Ok(());
            };
            let mut headers = vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "ENDPOINTS"];
            if all {
                headers.insert(0, "NAMESPACE");
            }
            let rows = items
                .iter()
                .map(|v| {
                    let ports: Vec<String> = v
                        .ports
                        .iter()
                        .map(|p| match p.node_port {
                            Some(np) => format!("{}:{np}/{}", p.port, p.protocol),
                            None => format!("{}/{}", p.port, p.protocol),
                        })
                        .collect();
                    let eps: Vec<&str> = v
                        .ports
                        .iter()
                        .flat_map(|p| p.endpoints.iter().map(String::as_str))
                        .collect();
                    let mut r = vec![
                        v.name.clone(),
                        format!("{:?}", v.service_type),
                        v.cluster_ip.to_string(),
                        ports.join(","),
                        if eps.is_empty() {
                            "<none>".into()
                        } else {
                            eps.join(",")
                        },
                    ];
                    if all {
                        r.insert(0, v.namespace.clone());
                    }
                    r
                })
                .collect();
            table(&headers, rows);
        }
        "endpoints" | "ep" | "cep" => {
            let keep = |e: &Endpoint| ns_ok(Some(&e.namespace)) && name_ok(&e.pod);
            let Some(eps) =
                listing(client, "/api/endpoints", "endpoints", name, output, keep).await?
            else {
                return Ok(());
            };
            let enabled = |on: bool| if on { "Enabled" } else { "Disabled" }.to_owned();
            let rows = eps
                .iter()
                .map(|e| {
                    vec![
                        e.ep_id.to_string(),
                        format!("{}/{}", e.namespace, e.pod),
                        enabled(e.ingress_enforced),
                        enabled(e.egress_enforced),
                        e.identity.to_string(),
                        e.ip.to_string(),
                        e.ifname.clone(),
                    ]
                })
                .collect();
            table(
                &[
                    "ENDPOINT",
                    "POD",
                    "POLICY (INGRESS)",
                    "POLICY (EGRESS)",
                    "IDENTITY",
                    "IPV4",
                    "INTERFACE",
                ],
                rows,
            );
        }
        "identities" | "identity" | "id" => {
            let ids: Vec<Identity> = client.get("/api/identities").await?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&ids, output);
            }
            let rows = ids
                .iter()
                .map(|i| vec![i.id.to_string(), i.label_strings().join(" ")])
                .collect();
            table(&["ID", "LABELS"], rows);
        }
        "policies" | "policy" => {
            return policy_get(client, None, name, output).await;
        }
        "flows" => {
            let filter = FlowFilter {
                limit: Some(20),
                ..Default::default()
            };
            observe(client, false, &filter, output).await?
        }
        "limits" | "limit" | "connectionlimits" => {
            // Limits are listed as NAMESPACE/NAME; either form selects one.
            let keep = |l: &LimitStatus| {
                name.is_none_or(|n| l.limit == n || l.limit.rsplit('/').next() == Some(n))
            };
            let Some(limits) = listing(
                client,
                "/api/x/limits",
                "connectionlimits",
                name,
                output,
                keep,
            )
            .await?
            else {
                return Ok(());
            };
            let rows = limits
                .iter()
                .map(|l| {
                    vec![
                        l.limit.clone(),
                        l.pod.clone(),
                        l.port.to_string(),
                        l.peer_identity
                            .map_or_else(|| "(shared)".into(), |i| i.to_string()),
                        format!("{}/{}", l.connections, l.max),
                    ]
                })
                .collect();
            table(
                &["LIMIT", "POD", "PORT", "PEER IDENTITY", "CONNECTIONS"],
                rows,
            );
        }
        kind if model::policy::policy_kind(kind).is_some() => {
            return policy_get(client, model::policy::policy_kind(kind), name, output).await;
        }
        other => bail!(
            "unknown resource {other:?}; try pods, services, endpoints, identities or policies"
        ),
    }
    Ok(())
}

/// A pod (or a host outside the cluster) that a command names: `NAME`, `NS/NAME`, or a
/// Deployment's name (its first pod, as `kubectl exec deploy/x` picks).
struct Target {
    namespace: String,
    name: String,
    pod: Option<Pod>,
}

async fn find_pod(client: &Client, pod: &str) -> Result<Target> {
    let list: Vec<Pod> = client.get("/api/pods").await?;
    let (ns, name) = match pod.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, pod),
    };
    let found = list
        .iter()
        .find(|p| {
            p.name == name
                && ns.is_none_or(|ns| p.namespace == ns)
                && (ns.is_some() || p.namespace == "default")
        })
        .or_else(|| list.iter().find(|p| p.name == name))
        .or_else(|| {
            list.iter()
                .find(|p| p.owner.as_deref() == Some(name.trim_start_matches("deploy/")))
        });
    if let Some(p) = found {
        return Ok(Target {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            pod: Some(p.clone()),
        });
    }
    if ns.is_none_or(|ns| ns == "world") {
        // Hosts outside the cluster (the attacker, the monitor) can be entered like pods.
        let hosts: Vec<Host> = client.get("/api/x/hosts").await.unwrap_or_default();
        if let Some(h) = hosts.into_iter().find(|h| h.name == name) {
            return Ok(Target {
                namespace: h.namespace,
                name: h.name,
                pod: None,
            });
        }
    }
    let names: Vec<String> = list.iter().map(Pod::key).collect();
    bail!("pod {pod:?} not found; pods: {}", names.join(", "))
}

async fn describe(client: &Client, resource: &str, name: &str) -> Result<()> {
    if !matches!(resource, "pod" | "pods" | "po") {
        bail!("describe supports pods: `lab describe pod NAME`");
    }
    let target = find_pod(client, name).await?;
    let Some(p) = target.pod else {
        bail!("{name} is a host outside the cluster, not a pod");
    };
    let filter = FlowFilter {
        pod: Some(p.key()),
        limit: Some(5),
        ..Default::default()
    };
    let flows: Vec<Flow> = client
        .get(&format!("/api/flows?{}", filter.query()))
        .await
        .unwrap_or_default();
    println!("Name:           {}", p.name);
    println!("Namespace:      {}", p.namespace);
    println!(
        "Labels:         {}",
        labels_str(&p.labels).replace(',', "\n                ")
    );
    println!("Status:         {:?}", p.phase);
    println!("IP:             {}", p.ip);
    println!("Identity:       {}", p.identity);
    println!("Endpoint ID:    {}", p.endpoint_id);
    println!(
        "Controlled By:  {}",
        p.owner
            .as_deref()
            .map(|o| format!("Deployment/{o}"))
            .unwrap_or_else(|| "<none>".into())
    );
    println!(
        "Network:        netns {} (alive: {}), node side {}",
        p.netns, p.netns_alive, p.node_interface
    );
    println!("Container:");
    println!("  Image:        {}", p.image);
    println!("  Workload:     {}", p.workload);
    println!("  PID:          {}", or_none(p.pid));
    println!(
        "  Started:      {}",
        or_none(p.started_at.map(model::time::rfc3339::format))
    );
    println!("  Restarts:     {}", p.restarts);
    println!("  Last exit:    {}", or_none(p.last_exit.as_deref()));
    println!("  Log:          {}", p.log_file.display());
    println!("Source:         {}", p.source);
    if !flows.is_empty() {
        println!("Recent flows:");
        for f in &flows {
            println!("  {}", flow_line(f));
        }
    }
    Ok(())
}

async fn exec(client: &Client, pod: &str, command: &[String]) -> Result<i32> {
    let target = find_pod(client, pod).await?;
    let ctx: PodContext = client
        .get(&format!(
            "/api/pods/{}/{}/context",
            target.namespace, target.name
        ))
        .await?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("`lab exec` enters the pod's namespaces and needs root: run it with sudo");
    }
    let (program, args) = command.split_first().context("no command given")?;
    let status = ctx.command(program, args)?.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("{program}: command not found (the pod runs host programs; is it installed on this machine?)")
        } else {
            anyhow::anyhow!("running {program} in {}: {e}", target.name)
        }
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn logs(client: &Client, pod: &str, follow: bool, tail: Option<usize>) -> Result<()> {
    let target = find_pod(client, pod).await?;
    let Some(p) = target.pod else {
        bail!("{pod} is a host outside the cluster: it has no log");
    };
    let path = p.log_file;
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = tail.map(|t| lines.len().saturating_sub(t)).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for l in &lines[start..] {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    drop(out);
    if follow {
        let mut pos = text.len() as u64;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let len = file.metadata()?.len();
            if len > pos {
                file.seek(std::io::SeekFrom::Start(pos))?;
                let mut reader = std::io::BufReader::new(&file);
                let mut line = String::new();
                while reader.read_line(&mut line)? > 0 {
                    print!("{line}");
                    line.clear();
                }
                std::io::stdout().flush()?;
                pos = len;
            }
        }
    }
    Ok(())
}

/// Expands `-f` arguments: files, directories (their .yaml/.yml/.json files, sorted) and `-`.
/// Each file is read with [`enforcer::yaml::Source::read`]: errors name the file, and a file
/// larger than the lab reads, or not UTF-8 text, is refused before anything is sent.
fn read_sources(files: &[String]) -> Result<Vec<(String, String)>> {
    let read = |name: String| -> Result<(String, String)> {
        let src = enforcer::yaml::Source::read(&name)?;
        Ok((src.name, src.text))
    };
    let mut out = Vec::new();
    for f in files {
        let path = PathBuf::from(f);
        if f != "-" && path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("reading {f}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            for e in entries {
                out.push(read(e.display().to_string())?);
            }
        } else {
            out.push(read(f.clone())?);
        }
    }
    Ok(out)
}

/// Prints an API failure, with each located error on its own line.
fn report_failure(e: &anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    1
}

async fn policy(client: &Client, cmd: PolicyCommand) -> Result<i32> {
    match cmd {
        PolicyCommand::Apply { files, dry_run } => {
            let sources = read_sources(&files)?;
            // All files are one change: each is validated first (errors name the right file),
            // and only then applied. Every file's errors are shown, not only the first file's.
            let mut failed = false;
            for (source, text) in &sources {
                let req = ApplyRequest {
                    source: source.clone(),
                    text: text.clone(),
                    dry_run: true,
                };
                if let Err(e) = client.post::<ApplyResult>("/api/policies", &req).await {
                    report_failure(&e);
                    failed = true;
                }
            }
            if failed {
                return Ok(1);
            }
            for (source, text) in sources {
                let req = ApplyRequest {
                    source,
                    text,
                    dry_run,
                };
                match client.post::<ApplyResult>("/api/policies", &req).await {
                    Ok(result) => {
                        for r in &result.results {
                            let suffix = if dry_run { " (dry run)" } else { "" };
                            let audit = if r.audit { " [audit mode]" } else { "" };
                            println!("{} {}{audit}{suffix}", r.resource(), r.action.name());
                        }
                    }
                    Err(e) => return Ok(report_failure(&e)),
                }
            }
        }
        PolicyCommand::Get { target, output } => {
            let (kind, name) = kind_and_name(&target)?;
            return policy_get(client, kind, name.as_deref(), output)
                .await
                .map(|_| 0);
        }
        PolicyCommand::Delete {
            target,
            files,
            all,
            namespace,
        } => {
            let (kind, name) = kind_and_name(&target)?;
            if kind.is_some() && name.is_none() {
                bail!(
                    "say which one to delete: `lab policy delete {} NAME`",
                    target[0]
                );
            }
            let mut requests = Vec::new();
            if all {
                requests.push(DeleteRequest {
                    all: true,
                    ..Default::default()
                });
            }
            for (source, text) in read_sources(&files)? {
                requests.push(DeleteRequest {
                    text: Some(text),
                    source: Some(source),
                    ..Default::default()
                });
            }
            if let Some(n) = name {
                requests.push(DeleteRequest {
                    name: Some(n),
                    kind: kind.map(str::to_owned),
                    namespace,
                    ..Default::default()
                });
            }
            if requests.is_empty() {
                bail!("say which policy to delete: NAME, -f FILE or --all");
            }
            for req in requests {
                match client
                    .call::<DeleteResult>(Method::DELETE, "/api/policies", Some(&req))
                    .await
                {
                    Ok(result) => {
                        for d in &result.deleted {
                            println!("{d} deleted");
                        }
                    }
                    Err(e) => return Ok(report_failure(&e)),
                }
            }
        }
        PolicyCommand::AuditMode { mode } => {
            let req = AuditMode {
                audit_mode: mode == "on",
            };
            let now: AuditMode = client.post("/api/x/audit-mode", &req).await?;
            println!(
                "lab-wide audit mode {}",
                if now.audit_mode {
                    "on: would-be drops are forwarded and reported as AUDIT"
                } else {
                    "off: policies are enforced"
                }
            );
        }
        PolicyCommand::Audit {
            name,
            mode,
            namespace,
        } => {
            let req = AuditSwitch {
                audit: mode == "on",
            };
            let now: PolicyAudit = client
                .post(&format!("/api/policies/{namespace}/{name}/audit"), &req)
                .await?;
            println!(
                "{}: audit mode {}",
                now.policy,
                if now.audit {
                    "on (would-be drops are forwarded and reported as AUDIT)"
                } else {
                    "off (enforced)"
                }
            );
        }
    }
    Ok(0)
}

/// The items of a list route that `keep` accepts, or `None` once they were printed as JSON or
/// YAML. A named `get` that matches nothing is an error, as in kubectl.
async fn listing<T: DeserializeOwned + Serialize>(
    client: &Client,
    path: &str,
    kind: &str,
    name: Option<&str>,
    output: Output,
    keep: impl Fn(&T) -> bool,
) -> Result<Option<Vec<T>>> {
    let all: Vec<T> = client.get(path).await?;
    let items: Vec<T> = all.into_iter().filter(|i| keep(i)).collect();
    if let Some(n) = name
        && items.is_empty()
    {
        bail!("{kind} \"{n}\" not found");
    }
    if matches!(output, Output::Json | Output::Yaml) {
        print_structured(&items, output)?;
        return Ok(None);
    }
    Ok(Some(items))
}

/// `[KIND] [NAME]`, `KIND/NAME` or `NAME`, as kubectl takes a resource: (kind, name). One word
/// that names a kind (`ccg`, `cnp`, ...) is a kind.
fn kind_and_name(args: &[String]) -> Result<(Option<&'static str>, Option<String>)> {
    let kind = |word: &str| {
        model::policy::policy_kind(word).ok_or_else(|| {
            anyhow::anyhow!(
                "`{word}` is not a kind of policy object; use cnp, ccnp, netpol, ccg or connectionlimit"
            )
        })
    };
    Ok(match args {
        [] => (None, None),
        [one] => match one.split_once('/') {
            Some((k, n)) => (Some(kind(k)?), Some(n.to_owned())),
            None => match model::policy::policy_kind(one) {
                Some(k) => (Some(k), None),
                None => (None, Some(one.clone())),
            },
        },
        [k, n, ..] => (Some(kind(k)?), Some(n.clone())),
    })
}

async fn policy_get(
    client: &Client,
    kind: Option<&str>,
    name: Option<&str>,
    output: Output,
) -> Result<()> {
    let list: Vec<PolicyEntry> = client.get("/api/policies").await?;
    let items: Vec<PolicyEntry> = list
        .into_iter()
        .filter(|p| name.is_none_or(|n| p.name == n) && kind.is_none_or(|k| p.kind == k))
        .collect();
    if let Some(n) = name
        && items.is_empty()
    {
        bail!("{} \"{n}\" not found", kind.unwrap_or("policy"));
    }
    match output {
        Output::Yaml => {
            for p in &items {
                println!("---");
                print!("{}", serde_yaml_ng::to_string(&p.manifest)?);
            }
        }
        Output::Json => {
            let manifests: Vec<&serde_json::Value> = items.iter().map(|p| &p.manifest).collect();
            println!("{}", serde_json::to_string_pretty(&manifests)?)
        }
        _ => {
            let rows = items
                .iter()
                .map(|p| {
                    vec![
                        or_none(p.namespace.as_deref()),
                        p.name.clone(),
                        p.kind.clone(),
                        // A CIDR group is not enforced itself: the policies naming it are.
                        match (p.kind.as_str(), p.audit) {
                            ("CiliumCIDRGroup", _) => "-",
                            (_, true) => "audit",
                            (_, false) => "enforced",
                        }
                        .into(),
                        p.source.clone(),
                    ]
                })
                .collect();
            table(&["NAMESPACE", "NAME", "KIND", "MODE", "SOURCE"], rows);
        }
    }
    Ok(())
}

/// One line per flow, like `hubble observe`.
pub fn flow_line(f: &Flow) -> String {
    let who = |side: &EndpointRef, ip: std::net::Ipv4Addr, port: Option<u16>| {
        let name = side.pod().unwrap_or_else(|| ip.to_string());
        match port {
            Some(p) => format!("{name}:{p}"),
            None => name,
        }
    };
    let time = model::time::rfc3339::format(f.time);
    let time = time.get(11..23).unwrap_or(&time);
    let arrow = if f.is_reply { "<-" } else { "->" };
    let mut line = format!(
        "{time}  {} {arrow} {} {} {}",
        who(&f.source, f.ip.source, f.source_port()),
        who(&f.destination, f.ip.destination, f.destination_port()),
        f.traffic_direction.lower(),
        f.verdict.name(),
    );
    if let Some(d) = f.drop {
        line.push_str(&format!(" ({})", d.drop_reason_desc.name()));
    }
    if let Some(l7) = &f.l7 {
        line.push_str(&format!(" {} {}", l7.http.method, l7.http.url));
        if l7.http.code != 0 {
            line.push_str(&format!(" => {}", l7.http.code));
        }
    } else {
        line.push_str(&format!(" {}", f.summary));
    }
    if !f.policy_explanation.is_empty() {
        line.push_str(&format!("\n      {}", f.policy_explanation));
    }
    line
}

async fn observe(client: &Client, follow: bool, filter: &FlowFilter, output: Output) -> Result<()> {
    let print = |f: &Flow| match output {
        Output::Json | Output::Yaml => println!("{}", serde_json::to_string(f).unwrap_or_default()),
        _ => println!("{}", flow_line(f)),
    };
    let query = filter.query();
    let flows: Vec<Flow> = client.get(&format!("/api/flows?{query}")).await?;
    for f in &flows {
        print(f);
    }
    if follow {
        client
            .stream_events(&format!("/api/flows/stream?{query}"), |name, data| {
                if name == "flow" {
                    if let Ok(f) = serde_json::from_str::<Flow>(data) {
                        print(&f);
                    }
                } else if name == "lagged" {
                    eprintln!("({data} flows skipped: the terminal could not keep up)");
                }
                true
            })
            .await?;
    }
    Ok(())
}

#[expect(clippy::too_many_arguments, reason = "the command's flags, as parsed")]
async fn ship(
    client: &Client,
    pod: &str,
    action: &str,
    args: &[String],
    timeout: f64,
    user: Option<String>,
    password: Option<String>,
    output: Output,
) -> Result<i32> {
    let target = find_pod(client, pod).await?;
    let timeout_ms = model::moves::timeout_ms(timeout).map_err(|e| anyhow::anyhow!(e))?;
    let mv = Move::from_words(action, args, (user, password), timeout_ms)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let req = ShipCommand { mv, timeout_ms }.request();
    let result: ShipResult = client
        .post(
            &format!("/api/pods/{}/{}/ship", target.namespace, target.name),
            &req,
        )
        .await?;
    match output {
        Output::Json | Output::Yaml => print_structured(&result, output)?,
        _ => println!("{}", result.summary),
    }
    Ok(result.exit_code)
}

/// Inside a pod: performs one ship move and prints its outcome as JSON (used by `lab ship` and
/// the web page).
fn ship_move(json_arg: &str) -> Result<i32> {
    use demo_services::ship::{Options, perform};
    let req: ShipRequest = serde_json::from_str(json_arg).context("ship-move --json")?;
    let opts = req.options.apply(Options::default());
    let rt = runtime()?;
    let outcome = rt.block_on(perform(&req.mv, &opts));
    println!("{}", serde_json::to_string(&ShipResult::from(outcome))?);
    Ok(0)
}

fn audit(
    paths: &Paths,
    files: &[String],
    offline: bool,
    fail_on: &str,
    output: Output,
) -> Result<i32> {
    use crate::audit::{Finding, Severity};

    let sources = read_sources(files)?;
    let rt = runtime()?;
    let client = Client::new(paths);
    let live = !offline && std::path::Path::new(&paths.api_socket()).exists();
    let findings: Vec<Finding> = if live {
        let req = AuditRequest {
            files: sources
                .into_iter()
                .map(|(source, text)| AuditFile { source, text })
                .collect(),
        };
        rt.block_on(client.post("/api/x/audit", &req))?
    } else {
        if sources.is_empty() {
            bail!(
                "no lab is running: give policy files to audit with -f FILE (or start a lab to audit it live)"
            );
        }
        let srcs: Vec<enforcer::yaml::Source> = sources
            .into_iter()
            .map(|(n, t)| enforcer::yaml::Source::new(n, t))
            .collect();
        crate::audit::audit(&crate::audit::input_from_files(&srcs)?)
    };
    match output {
        Output::Json | Output::Yaml => print_structured(&findings, output)?,
        _ => print!("{}", crate::audit::render(&findings)),
    }
    let threshold = Severity::parse(fail_on).unwrap_or(Severity::Medium);
    Ok(i32::from(findings.iter().any(|f| f.severity >= threshold)))
}
