//! The command line, shaped like kubectl: `up`, `down`, `get`, `describe`, `exec`, `logs`,
//! `policy apply|get|delete`, `observe`, `ship`. Output is a table by default, or `-o json|yaml`.

use std::{
    io::{BufRead, Seek, Write},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use hyper::Method;
use serde_json::{Value, json};

use crate::{client::Client, paths::Paths, spawn::PodContext, up};

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
        /// Kubernetes manifests (Pod, Deployment, Service, Namespace) instead of the default cluster.
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
    /// CiliumNetworkPolicies: apply, get, delete, audit.
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
    /// Apply CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy from files, a directory or `-`.
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Validate and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the policies in force.
    Get {
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete policies by name, by file, or all of them.
    Delete {
        name: Option<String>,
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
            let s = client.get("/api/status").await?;
            println!(
                "Lab {:?} is up (pid {}): {} pods, {} services, {} policies.\n  Web lab: {}",
                s["instance"].as_str().unwrap_or_default(),
                s["pid"],
                s["pods"],
                s["services"],
                s["policies"],
                s["web"].as_str().unwrap_or("-")
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
        } => observe(&client, follow, pod, verdict, flow_type, last, output).await?,
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
            let body = match cmd {
                PrefilterCommand::Update { cidrs } => json!({"action": "update", "cidrs": cidrs}),
                PrefilterCommand::Delete { cidrs } => json!({"action": "delete", "cidrs": cidrs}),
                PrefilterCommand::Bypass {
                    node_port,
                    unsafe_ok,
                    off,
                } => {
                    json!({"action": "bypass", "node_port": node_port, "enabled": !off, "unsafe": unsafe_ok})
                }
                PrefilterCommand::List => Value::Null,
            };
            let state = if body.is_null() {
                client.get("/api/x/prefilter").await?
            } else {
                client
                    .request(Method::POST, "/api/x/prefilter", Some(body))
                    .await?
            };
            let deny: Vec<String> = state["deny"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            println!(
                "XDP prefilter on {}: deny {}",
                s(&state["interface"]),
                if deny.is_empty() {
                    "nothing".into()
                } else {
                    deny.join(", ")
                }
            );
            for p in state["bypass_node_ports"].as_array().into_iter().flatten() {
                println!("  UNSAFE: NodePort {} skips every network policy", s(p));
            }
        }
        Command::Metrics => print!("{}", client.text("/metrics").await?),
        Command::DebugApi { method, path, body } => {
            let method = Method::from_bytes(method.to_uppercase().as_bytes())?;
            let body = match body {
                Some(b) => Some(serde_json::from_str(&b)?),
                None if method == Method::POST => Some(json!({})),
                None => None,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&client.request(method, &path, body).await?)?
            );
        }
        Command::Conntrack => {
            let entries = client.get("/api/x/conntrack").await?;
            let rows: Vec<Vec<String>> = entries
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        s(&e["direction"]),
                        s(&e["protocol"]),
                        s(&e["source"]),
                        s(&e["destination"]),
                        s(&e["packets"]),
                        s(&e["bytes"]),
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

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
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

fn print_structured(v: &Value, output: Output) -> Result<()> {
    match output {
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn labels_str(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "<none>".into())
}

fn age(created: &Value) -> String {
    let Some(t) = created.as_str() else {
        return "-".into();
    };
    let now = enforcer::flow::now_rfc3339();
    // Both are RFC 3339 UTC; compare by parsing the seconds of day and the date.
    let secs = |s: &str| -> Option<i64> {
        let (date, time) = s.split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
        let mut t = time.trim_end_matches('Z').split(':');
        let (h, mi) = (
            t.next()?.parse::<i64>().ok()?,
            t.next()?.parse::<i64>().ok()?,
        );
        let sec = t.next()?.split('.').next()?.parse::<i64>().ok()?;
        Some((((y * 372 + m * 31 + dd) * 24 + h) * 60 + mi) * 60 + sec)
    };
    match (secs(t), secs(&now)) {
        (Some(a), Some(b)) if b >= a => {
            let d = b - a;
            if d < 120 {
                format!("{d}s")
            } else if d < 7200 {
                format!("{}m", d / 60)
            } else {
                format!("{}h", d / 3600)
            }
        }
        _ => "-".into(),
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
    let ns_ok = |v: &Value| {
        all || v["namespace"].as_str().unwrap_or("default") == namespace.unwrap_or("default")
            || v["namespace"].is_null()
    };
    let name_ok = |v: &Value| name.is_none_or(|n| v["name"].as_str() == Some(n));
    match resource {
        "pods" | "pod" | "po" => {
            let items = list(client, "/api/pods", |p| ns_ok(p) && name_ok(p)).await?;
            found("pods", name, &items)?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&Value::Array(items), output);
            }
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
                        s(&p["name"]),
                        if p["ready"].as_bool() == Some(true) {
                            "1/1".into()
                        } else {
                            "0/1".into()
                        },
                        s(&p["phase"]),
                        s(&p["restarts"]),
                        age(&p["started_at"]),
                        s(&p["ip"]),
                    ];
                    if all {
                        r.insert(0, s(&p["namespace"]));
                    }
                    if output == Output::Wide {
                        r.extend([
                            s(&p["identity"]),
                            s(&p["node_interface"]),
                            s(&p["netns"]),
                            labels_str(&p["labels"]),
                        ]);
                    }
                    r
                })
                .collect();
            table(&headers, rows);
        }
        "services" | "service" | "svc" => {
            let items = list(client, "/api/services", |p| ns_ok(p) && name_ok(p)).await?;
            found("services", name, &items)?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&Value::Array(items), output);
            }
            let mut headers = vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "ENDPOINTS"];
            if all {
                headers.insert(0, "NAMESPACE");
            }
            let rows = items
                .iter()
                .map(|v| {
                    let ports: Vec<String> = v["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| match p["node_port"].as_u64() {
                            Some(np) => format!("{}:{np}/{}", p["port"], s(&p["protocol"])),
                            None => format!("{}/{}", p["port"], s(&p["protocol"])),
                        })
                        .collect();
                    let eps: Vec<String> = v["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|p| p["endpoints"].as_array().cloned().unwrap_or_default())
                        .map(|e| s(&e))
                        .collect();
                    let mut r = vec![
                        s(&v["name"]),
                        s(&v["type"]),
                        s(&v["cluster_ip"]),
                        ports.join(","),
                        if eps.is_empty() {
                            "<none>".into()
                        } else {
                            eps.join(",")
                        },
                    ];
                    if all {
                        r.insert(0, s(&v["namespace"]));
                    }
                    r
                })
                .collect();
            table(&headers, rows);
        }
        "endpoints" | "ep" | "cep" => {
            let pod_ok = |e: &Value| name.is_none_or(|n| e["pod"].as_str() == Some(n));
            let eps = list(client, "/api/endpoints", |e| ns_ok(e) && pod_ok(e)).await?;
            found("endpoints", name, &eps)?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&Value::Array(eps), output);
            }
            let rows = eps
                .iter()
                .map(|e| {
                    let flags = e["flags"].as_u64().unwrap_or(0) as u32;
                    let enf = |b: u32| {
                        if flags & b != 0 {
                            "Enabled"
                        } else {
                            "Disabled"
                        }
                    };
                    vec![
                        s(&e["ep_id"]),
                        format!("{}/{}", s(&e["namespace"]), s(&e["pod"])),
                        enf(enforcer_common::EP_INGRESS_ENFORCED).into(),
                        enf(enforcer_common::EP_EGRESS_ENFORCED).into(),
                        s(&e["identity"]),
                        s(&e["ip"]),
                        s(&e["ifname"]),
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
            let ids = client.get("/api/identities").await?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&ids, output);
            }
            let rows = ids
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let labels: Vec<String> = i["labels"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    if v.as_str() == Some("") {
                                        k.clone()
                                    } else {
                                        format!("{k}={}", v.as_str().unwrap_or_default())
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    vec![s(&i["id"]), labels.join(" ")]
                })
                .collect();
            table(&["ID", "LABELS"], rows);
        }
        "policies" | "policy" | "cnp" | "ciliumnetworkpolicies" | "ccnp" => {
            return policy_get(client, name, output).await;
        }
        "flows" => observe(client, false, None, None, None, 20, output).await?,
        "limits" | "limit" | "connectionlimits" => {
            // Limits are listed as NAMESPACE/NAME; either form selects one.
            let limit_ok = |l: &Value| {
                name.is_none_or(|n| {
                    let full = l["limit"].as_str().unwrap_or_default();
                    full == n || full.rsplit('/').next() == Some(n)
                })
            };
            let limits = list(client, "/api/x/limits", limit_ok).await?;
            found("connectionlimits", name, &limits)?;
            if matches!(output, Output::Json | Output::Yaml) {
                return print_structured(&Value::Array(limits), output);
            }
            let rows = limits
                .iter()
                .map(|l| {
                    vec![
                        s(&l["limit"]),
                        s(&l["pod"]),
                        s(&l["port"]),
                        if l["peer_identity"].is_null() {
                            "(shared)".into()
                        } else {
                            s(&l["peer_identity"])
                        },
                        format!("{}/{}", s(&l["connections"]), s(&l["max"])),
                    ]
                })
                .collect();
            table(
                &["LIMIT", "POD", "PORT", "PEER IDENTITY", "CONNECTIONS"],
                rows,
            );
        }
        other => bail!(
            "unknown resource {other:?}; try pods, services, endpoints, identities or policies"
        ),
    }
    Ok(())
}

async fn find_pod(client: &Client, pod: &str) -> Result<Value> {
    let pods = client.get("/api/pods").await?;
    let (ns, name) = match pod.split_once('/') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, pod),
    };
    let list = pods.as_array().cloned().unwrap_or_default();
    let found = list
        .iter()
        .find(|p| {
            p["name"].as_str() == Some(name)
                && ns.is_none_or(|ns| p["namespace"].as_str() == Some(ns))
                && (ns.is_some() || p["namespace"].as_str() == Some("default"))
        })
        .or_else(|| list.iter().find(|p| p["name"].as_str() == Some(name)))
        .or_else(|| {
            // `deathstar` names the deployment: pick its first pod, as `kubectl exec deploy/x` does.
            list.iter()
                .find(|p| p["owner"].as_str() == Some(name.trim_start_matches("deploy/")))
        });
    if found.is_none() && ns.is_none_or(|ns| ns == "world") {
        // Hosts outside the cluster (the attacker, the monitor) can be entered like pods.
        let hosts = client.get("/api/x/hosts").await.unwrap_or(Value::Null);
        let host = hosts
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"].as_str() == Some(name));
        if let Some(h) = host {
            return Ok(h.clone());
        }
    }
    match found {
        Some(p) => Ok(p.clone()),
        None => {
            let names: Vec<String> = list
                .iter()
                .map(|p| format!("{}/{}", s(&p["namespace"]), s(&p["name"])))
                .collect();
            bail!("pod {pod:?} not found; pods: {}", names.join(", "))
        }
    }
}

async fn describe(client: &Client, resource: &str, name: &str) -> Result<()> {
    if !matches!(resource, "pod" | "pods" | "po") {
        bail!("describe supports pods: `lab describe pod NAME`");
    }
    let p = find_pod(client, name).await?;
    let flows = client
        .get(&format!(
            "/api/flows?pod={}/{}&limit=5",
            s(&p["namespace"]),
            s(&p["name"])
        ))
        .await
        .unwrap_or(Value::Null);
    println!("Name:           {}", s(&p["name"]));
    println!("Namespace:      {}", s(&p["namespace"]));
    println!(
        "Labels:         {}",
        labels_str(&p["labels"]).replace(',', "\n                ")
    );
    println!("Status:         {}", s(&p["phase"]));
    println!("IP:             {}", s(&p["ip"]));
    println!("Identity:       {}", s(&p["identity"]));
    println!("Endpoint ID:    {}", s(&p["endpoint_id"]));
    println!(
        "Controlled By:  {}",
        p["owner"]
            .as_str()
            .map(|o| format!("Deployment/{o}"))
            .unwrap_or_else(|| "<none>".into())
    );
    println!(
        "Network:        netns {} (alive: {}), node side {}",
        s(&p["netns"]),
        s(&p["netns_alive"]),
        s(&p["node_interface"])
    );
    println!("Container:");
    println!("  Image:        {}", s(&p["image"]));
    println!("  PID:          {}", s(&p["pid"]));
    println!("  Started:      {}", s(&p["started_at"]));
    println!("  Restarts:     {}", s(&p["restarts"]));
    println!("  Last exit:    {}", s(&p["last_exit"]));
    println!("  Log:          {}", s(&p["log_file"]));
    println!("Source:         {}", s(&p["source"]));
    if let Some(fl) = flows.as_array().filter(|f| !f.is_empty()) {
        println!("Recent flows:");
        for f in fl {
            println!("  {}", flow_line(f));
        }
    }
    Ok(())
}

async fn exec(client: &Client, pod: &str, command: &[String]) -> Result<i32> {
    let p = find_pod(client, pod).await?;
    let ctx: PodContext = serde_json::from_value(
        client
            .get(&format!(
                "/api/pods/{}/{}/context",
                s(&p["namespace"]),
                s(&p["name"])
            ))
            .await?,
    )?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("`lab exec` enters the pod's namespaces and needs root: run it with sudo");
    }
    let (program, args) = command.split_first().context("no command given")?;
    let status = ctx.command(program, args)?.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("{program}: command not found (the pod runs host programs; is it installed on this machine?)")
        } else {
            anyhow::anyhow!("running {program} in {}: {e}", s(&p["name"]))
        }
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn logs(client: &Client, pod: &str, follow: bool, tail: Option<usize>) -> Result<()> {
    let p = find_pod(client, pod).await?;
    let path = PathBuf::from(s(&p["log_file"]));
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
fn read_sources(files: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            out.push(("-".into(), text));
            continue;
        }
        let path = PathBuf::from(f);
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            entries.sort();
            for e in entries {
                out.push((e.display().to_string(), std::fs::read_to_string(&e)?));
            }
        } else {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {f}"))?;
            out.push((f.clone(), text));
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
            // All files are one atomic change: send them as one multi-document text per file,
            // validated together before anything changes.
            let mut combined = Vec::new();
            for (name, text) in sources {
                // Each file separately so errors name the right file; apply atomically by
                // validating all with dry-run first.
                combined.push((name, text));
            }
            for (name, text) in &combined {
                if let Err(e) = client
                    .request(
                        Method::POST,
                        "/api/policies",
                        Some(json!({"source": name, "text": text, "dry_run": true})),
                    )
                    .await
                {
                    return Ok(report_failure(&e));
                }
            }
            for (name, text) in &combined {
                match client
                    .request(
                        Method::POST,
                        "/api/policies",
                        Some(json!({"source": name, "text": text, "dry_run": dry_run})),
                    )
                    .await
                {
                    Ok(v) => {
                        for r in v["results"].as_array().into_iter().flatten() {
                            let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                            let suffix = if dry_run { " (dry run)" } else { "" };
                            let audit = if r["audit"].as_bool() == Some(true) {
                                " [audit mode]"
                            } else {
                                ""
                            };
                            let group = if kind == "connectionlimit" {
                                "lab.dev"
                            } else {
                                "cilium.io"
                            };
                            println!(
                                "{kind}.{group}/{} {}{audit}{suffix}",
                                s(&r["name"]),
                                s(&r["action"])
                            );
                        }
                    }
                    Err(e) => return Ok(report_failure(&e)),
                }
            }
        }
        PolicyCommand::Get { name, output } => {
            return policy_get(client, name.as_deref(), output).await.map(|_| 0);
        }
        PolicyCommand::Delete {
            name,
            files,
            all,
            namespace,
        } => {
            let mut bodies = Vec::new();
            if all {
                bodies.push(json!({"all": true}));
            }
            for (src, text) in read_sources(&files)? {
                bodies.push(json!({"text": text, "source": src}));
            }
            if let Some(n) = name {
                bodies.push(json!({"name": n, "namespace": namespace}));
            }
            if bodies.is_empty() {
                bail!("say which policy to delete: NAME, -f FILE or --all");
            }
            for b in bodies {
                match client
                    .request(Method::DELETE, "/api/policies", Some(b))
                    .await
                {
                    Ok(v) => {
                        for d in v["deleted"].as_array().into_iter().flatten() {
                            println!("{} deleted", s(d));
                        }
                    }
                    Err(e) => return Ok(report_failure(&e)),
                }
            }
        }
        PolicyCommand::AuditMode { mode } => {
            let v = client
                .request(
                    Method::POST,
                    "/api/x/audit-mode",
                    Some(json!({"audit_mode": mode == "on"})),
                )
                .await?;
            println!(
                "lab-wide audit mode {}",
                if v["audit_mode"] == true {
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
            let v = client
                .request(
                    Method::POST,
                    &format!("/api/policies/{namespace}/{name}/audit"),
                    Some(json!({"audit": mode == "on"})),
                )
                .await?;
            println!(
                "{}: audit mode {}",
                s(&v["policy"]),
                if mode == "on" {
                    "on (would-be drops are forwarded and reported as AUDIT)"
                } else {
                    "off (enforced)"
                }
            );
        }
    }
    Ok(0)
}

/// A named `get` that matches nothing is an error, as in kubectl.
fn found(kind: &str, name: Option<&str>, items: &[Value]) -> Result<()> {
    match name {
        Some(n) if items.is_empty() => bail!("{kind} \"{n}\" not found"),
        _ => Ok(()),
    }
}

/// The items of a list endpoint that `keep` accepts.
async fn list(client: &Client, path: &str, keep: impl Fn(&Value) -> bool) -> Result<Vec<Value>> {
    let all = client.get(path).await?;
    Ok(all
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| keep(v))
        .cloned()
        .collect())
}

async fn policy_get(client: &Client, name: Option<&str>, output: Output) -> Result<()> {
    let list = client.get("/api/policies").await?;
    let items: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| name.is_none_or(|n| p["name"].as_str() == Some(n)))
        .cloned()
        .collect();
    match output {
        Output::Yaml => {
            for p in &items {
                println!("---");
                print!("{}", serde_yaml_ng::to_string(&p["manifest"])?);
            }
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(
                items.iter().map(|p| p["manifest"].clone()).collect()
            ))?
        ),
        _ => {
            let rows = items
                .iter()
                .map(|p| {
                    vec![
                        s(&p["namespace"]),
                        s(&p["name"]),
                        s(&p["kind"]),
                        if p["audit"].as_bool() == Some(true) {
                            "audit".into()
                        } else {
                            "enforced".into()
                        },
                        s(&p["source"]),
                    ]
                })
                .collect();
            table(&["NAMESPACE", "NAME", "KIND", "MODE", "SOURCE"], rows);
        }
    }
    Ok(())
}

/// One line per flow, like `hubble observe`.
pub fn flow_line(f: &Value) -> String {
    let who = |side: &Value, ip: &Value, port: Option<&Value>| {
        let name = match side["pod_name"].as_str() {
            Some(p) if !p.is_empty() => format!("{}/{}", s(&side["namespace"]), p),
            _ => s(ip),
        };
        match port {
            Some(p) if !p.is_null() => format!("{name}:{}", s(p)),
            _ => name,
        }
    };
    let l4 = f["l4"]["TCP"].as_object().or(f["l4"]["UDP"].as_object());
    let (sp, dp) = (
        l4.and_then(|m| m.get("source_port")),
        l4.and_then(|m| m.get("destination_port")),
    );
    let time = f["time"].as_str().unwrap_or_default();
    let time = time.get(11..23).unwrap_or(time);
    let arrow = if f["is_reply"].as_bool() == Some(true) {
        "<-"
    } else {
        "->"
    };
    let mut line = format!(
        "{time}  {} {arrow} {} {} {}",
        who(&f["source"], &f["IP"]["source"], sp),
        who(&f["destination"], &f["IP"]["destination"], dp),
        s(&f["traffic_direction"]).to_lowercase(),
        s(&f["verdict"]),
    );
    if let Some(r) = f["drop_reason_desc"].as_str() {
        line.push_str(&format!(" ({r})"));
    }
    if let Some(h) = f["l7"]["http"].as_object() {
        line.push_str(&format!(
            " {} {}",
            h.get("method").map(s).unwrap_or_default(),
            h.get("url").map(s).unwrap_or_default()
        ));
        if let Some(c) = h.get("code").filter(|c| !c.is_null()) {
            line.push_str(&format!(" => {}", s(c)));
        }
    } else if let Some(sum) = f["Summary"].as_str() {
        line.push_str(&format!(" {sum}"));
    }
    if let Some(e) = f["policy_explanation"].as_str().filter(|e| !e.is_empty()) {
        line.push_str(&format!("\n      {e}"));
    }
    line
}

async fn observe(
    client: &Client,
    follow: bool,
    pod: Option<String>,
    verdict: Option<String>,
    flow_type: Option<String>,
    last: usize,
    output: Output,
) -> Result<()> {
    let mut q = vec![format!("limit={last}")];
    if let Some(p) = &pod {
        q.push(format!("pod={p}"));
    }
    if let Some(v) = &verdict {
        q.push(format!("verdict={v}"));
    }
    if let Some(t) = &flow_type {
        q.push(format!("type={t}"));
    }
    let query = q.join("&");
    let print = |f: &Value| match output {
        Output::Json | Output::Yaml => println!("{}", serde_json::to_string(f).unwrap_or_default()),
        _ => println!("{}", flow_line(f)),
    };
    let flows = client.get(&format!("/api/flows?{query}")).await?;
    for f in flows.as_array().into_iter().flatten() {
        print(f);
    }
    if follow {
        client
            .stream_events(&format!("/api/flows/stream?{query}"), |name, data| {
                if name == "flow" {
                    if let Ok(v) = serde_json::from_str::<Value>(data) {
                        print(&v);
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
    let p = find_pod(client, pod).await?;
    let mv = match action {
        "land" => json!({"move": "land"}),
        "connect" => {
            let addr = args
                .first()
                .context("connect needs HOST:PORT, e.g. `lab ship xwing connect deathstar:80`")?;
            json!({"move": "connect", "addr": addr})
        }
        "flood" => {
            let n: u32 = args
                .first()
                .map(|a| a.parse())
                .transpose()
                .context("flood [CONNECTIONS] [SECONDS]: CONNECTIONS is a number")?
                .unwrap_or(100);
            let secs: f64 = args
                .get(1)
                .map(|a| a.parse())
                .transpose()
                .context("flood [CONNECTIONS] [SECONDS]: SECONDS is a number")?
                .unwrap_or(20.0);
            if secs > 50.0 {
                bail!("flood holds its connections at most 50 seconds");
            }
            json!({"move": "flood", "connections": n, "hold_ms": (secs * 1000.0) as u64})
        }
        "survey" => json!({"move": "survey"}),
        "fire" => json!({"move": "fire"}),
        "fetch-logs" => {
            let store = args.first().context(
                "fetch-logs needs a store: e.g. `lab ship xwing fetch-logs ftp-vulnerable`",
            )?;
            let store = if store.contains(':') {
                store.clone()
            } else {
                format!("{store}:21")
            };
            json!({"move": "fetch-logs", "store": store, "user": user, "password": password})
        }
        "http" => {
            let (method, url) = match args {
                [m, u, ..] => (m.clone(), u.clone()),
                _ => bail!("http needs METHOD URL, e.g. `lab ship tiefighter http GET /v1`"),
            };
            json!({"move": "http", "method": method, "url": url})
        }
        _ => unreachable!("clap checked"),
    };
    let body = json!({"move": mv, "options": {"timeout_ms": (timeout * 1000.0) as u64}});
    let outcome = client
        .request(
            Method::POST,
            &format!("/api/pods/{}/{}/ship", s(&p["namespace"]), s(&p["name"])),
            Some(body),
        )
        .await?;
    match output {
        Output::Json | Output::Yaml => print_structured(&outcome, output)?,
        _ => println!("{}", s(&outcome["summary"])),
    }
    Ok(outcome["exit_code"].as_i64().unwrap_or(4) as i32)
}

/// Inside a pod: performs one ship move and prints its outcome as JSON (used by `lab ship` and
/// the web page).
fn ship_move(json_arg: &str) -> Result<i32> {
    use demo_services::ship::{Move, Options, perform};
    let v: Value = serde_json::from_str(json_arg).context("ship-move --json")?;
    let mv: Move = serde_json::from_value(v["move"].clone()).context("the move")?;
    let mut opts = Options::default();
    if let Some(t) = v["options"]["timeout_ms"].as_u64() {
        opts.timeout_ms = t;
    }
    if let Some(b) = v["options"]["base_url"].as_str() {
        opts.base_url = b.to_owned();
    }
    let rt = runtime()?;
    let outcome = rt.block_on(perform(&mv, &opts));
    let mut out = serde_json::to_value(&outcome)?;
    out["summary"] = json!(outcome.summary());
    out["exit_code"] = json!(outcome.exit_code());
    println!("{out}");
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
        let body = json!({"files": sources.iter().map(|(s, t)| json!({"source": s, "text": t})).collect::<Vec<_>>()});
        let v = rt.block_on(client.request(Method::POST, "/api/x/audit", Some(body)))?;
        serde_json::from_value(v)?
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
        Output::Json | Output::Yaml => print_structured(&serde_json::to_value(&findings)?, output)?,
        _ => print!("{}", crate::audit::render(&findings)),
    }
    let threshold = Severity::parse(fail_on).unwrap_or(Severity::Medium);
    Ok(i32::from(findings.iter().any(|f| f.severity >= threshold)))
}
