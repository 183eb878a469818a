//! Doing lesson steps and exercise probes for real, through the [`Backend`]: the action (a ship
//! move, a program in a pod, a policy applied or deleted), the outcome graded against the
//! expectation, and the flows it caused (those recorded since the action started, filtered to
//! the pods involved), with the pods that restarted meanwhile.
//!
//! One action runs at a time (a lock), so two students' clicks or a check and a step never
//! mix their flows or policies.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    SharedBackend,
    actions::{Expect, Got, ShipAction, classify_exec, classify_ship},
    api::{ApiError, ApplyRequest, DeleteRequest, ExecRequest, FlowFilter},
    content::{Action, DeleteWhat, Exercise, FlowExpect, StepSpec},
};

/// Most flows returned for one step or probe.
const MAX_FLOWS: usize = 120;
/// How long a probe keeps collecting flows after its move.
const PROBE_SETTLE_MS: u64 = 300;

pub struct Runner {
    backend: SharedBackend,
    busy: tokio::sync::Mutex<()>,
}

#[derive(Debug, Serialize)]
pub struct StepRun {
    pub expected: String,
    pub got: Got,
    /// One line: `200 Ship landed`, `timed out after 5.0s`, `created cnp/default/rule1`.
    pub summary: String,
    pub pass: bool,
    /// The full answer: the ship's outcome, the program's output, the API's answer or error.
    pub outcome: Value,
    /// The pod that acted, as `namespace/name`.
    pub pod: Option<String>,
    pub output_check: Option<OutputCheck>,
    pub flow_checks: Vec<FlowCheck>,
    pub flows: Vec<Arc<Value>>,
    /// "default/deathstar-…: restarts 0 → 1".
    pub restarts: Vec<String>,
    pub cli: String,
    pub elapsed_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct OutputCheck {
    pub want: String,
    pub found: bool,
}

#[derive(Debug, Serialize)]
pub struct FlowCheck {
    pub want: String,
    pub found: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckRun {
    /// Policies removed before the student's was applied.
    pub removed: Vec<String>,
    /// What applying the student's policy did (`null` when the editor was empty).
    pub applied: Value,
    pub probes: Vec<ProbeRun>,
    pub right: usize,
    pub total: usize,
    pub passed: bool,
}

#[derive(Debug, Serialize)]
pub struct ProbeRun {
    pub n: usize,
    pub says: String,
    pub cli: String,
    pub expected: String,
    pub got: Got,
    pub summary: String,
    pub right: bool,
    /// For a wrong cell: the flows that show why (the drop, or what let it through).
    pub explain: Vec<Arc<Value>>,
    /// The exercise's hint, for a wrong cell.
    pub hint: Option<String>,
    /// A hint derived from the explaining flow, for a wrong cell.
    pub advice: Option<String>,
    pub flows: Vec<Arc<Value>>,
}

/// The cluster's pods, to resolve names written in lessons: a pod, `namespace/pod`, or a
/// Deployment (its pods).
struct Pods(Vec<Value>);

impl Pods {
    fn load(backend: &SharedBackend) -> Self {
        Self(backend.pods().as_array().cloned().unwrap_or_default())
    }

    fn key(p: &Value) -> String {
        format!(
            "{}/{}",
            p["namespace"].as_str().unwrap_or_default(),
            p["name"].as_str().unwrap_or_default()
        )
    }

    /// Pods that `name` stands for: the pod itself, or every replica of a Deployment.
    fn members(&self, name: &str) -> Vec<&Value> {
        let (ns, n) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, name),
        };
        let in_ns = |p: &&Value| ns.is_none_or(|ns| p["namespace"] == ns);
        let exact: Vec<&Value> = self
            .0
            .iter()
            .filter(in_ns)
            .filter(|p| p["name"] == n)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        let mut owned: Vec<&Value> = self
            .0
            .iter()
            .filter(in_ns)
            .filter(|p| p["owner"] == n)
            .collect();
        owned.sort_by_key(|p| (p["ready"] != true, Self::key(p)));
        owned
    }

    /// The one pod that acts for `name` (a Deployment's first ready replica).
    fn resolve(&self, name: &str) -> Result<String, ApiError> {
        let members = self.members(name);
        let pick = members
            .iter()
            .find(|p| p["namespace"] == "default")
            .or(members.first());
        pick.map(|p| Self::key(p)).ok_or_else(|| {
            ApiError::not_found(format!(
                "no pod or Deployment named {name:?} in this cluster"
            ))
        })
    }

    fn restarts(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|p| (Self::key(p), p["restarts"].as_u64().unwrap_or(0)))
            .collect()
    }

    /// Whether a flow's side (`source` or `destination`) is one of the pods `name` stands for.
    fn side_is(&self, name: &str, side: &Value) -> bool {
        let Some(pod) = side["pod_name"].as_str().filter(|p| !p.is_empty()) else {
            return false;
        };
        let ns = side["namespace"].as_str().unwrap_or_default();
        self.members(name)
            .iter()
            .any(|p| p["name"] == pod && p["namespace"] == ns)
    }
}

/// For a `connect` move, a service name becomes its cluster IP (when the port is one of the
/// service's) and a pod or Deployment name becomes the pod's IP — the way the lab hands
/// workloads their addresses at start — so a probe does not depend on DNS being allowed.
fn resolve_connect(ship: &ShipAction, pods: &Pods, services: &Value, acting: &str) -> ShipAction {
    let Some(addr) = ship.mv["addr"].as_str() else {
        return ship.clone();
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return ship.clone();
    };
    let Ok(port) = port.parse::<u64>() else {
        return ship.clone();
    };
    let acting_ns = acting.split_once('/').map_or("default", |(ns, _)| ns);
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default();
    let ns = parts.next().unwrap_or(acting_ns);
    let rest: Vec<&str> = parts.collect();
    if !(rest.is_empty() || rest == ["svc"] || rest == ["svc", "cluster", "local"]) {
        return ship.clone();
    }
    let service_ip = services.as_array().into_iter().flatten().find_map(|svc| {
        let ports = svc["ports"].as_array()?;
        (svc["name"] == name && svc["namespace"] == ns && ports.iter().any(|p| p["port"] == port))
            .then(|| svc["cluster_ip"].as_str().map(str::to_owned))?
    });
    let ip = service_ip.or_else(|| {
        let members = pods.members(&format!("{ns}/{name}"));
        let p = members
            .iter()
            .find(|p| p["ready"] == true)
            .or(members.first())?;
        p["ip"].as_str().map(str::to_owned)
    });
    match ip {
        Some(ip) => {
            let mut out = ship.clone();
            out.mv["addr"] = Value::String(format!("{ip}:{port}"));
            out
        }
        None => ship.clone(),
    }
}

fn is_reply(f: &Value) -> bool {
    f["is_reply"] == true
}

fn dest_port(f: &Value) -> Option<u64> {
    f["l4"]["TCP"]["destination_port"]
        .as_u64()
        .or_else(|| f["l4"]["UDP"]["destination_port"].as_u64())
}

fn is_dns(f: &Value) -> bool {
    dest_port(f) == Some(53) || f["l4"]["UDP"]["source_port"] == 53
}

fn l7_denied(f: &Value) -> bool {
    f["Type"] == "L7" && (f["verdict"] == "DROPPED" || f["l7"]["http"]["code"] == 403)
}

fn blocked_flow(f: &Value) -> bool {
    f["verdict"] == "DROPPED" || l7_denied(f)
}

impl FlowExpect {
    fn describe(&self) -> String {
        format!(
            "{} → {}{} {}",
            self.from.as_deref().unwrap_or("any"),
            self.to.as_deref().unwrap_or("any"),
            self.port.map(|p| format!(":{p}")).unwrap_or_default(),
            self.verdict.as_deref().unwrap_or("any verdict"),
        )
    }

    fn matches(&self, pods: &Pods, f: &Value) -> bool {
        self.from
            .as_deref()
            .is_none_or(|n| pods.side_is(n, &f["source"]))
            && self
                .to
                .as_deref()
                .is_none_or(|n| pods.side_is(n, &f["destination"]))
            && self.verdict.as_deref().is_none_or(|v| {
                f["verdict"]
                    .as_str()
                    .is_some_and(|fv| fv.eq_ignore_ascii_case(v))
            })
            && self.port.is_none_or(|p| dest_port(f) == Some(u64::from(p)))
    }
}

impl Runner {
    pub fn new(backend: SharedBackend) -> Self {
        Self {
            backend,
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// The time of the newest flow: flows after it were caused by what comes next.
    fn mark(&self) -> Option<String> {
        self.backend
            .flows(&FlowFilter {
                limit: Some(1),
                ..Default::default()
            })
            .last()
            .and_then(|f| f["time"].as_str().map(str::to_owned))
    }

    fn flows_since(&self, mark: &Option<String>) -> Vec<Arc<Value>> {
        self.backend.flows(&FlowFilter {
            since: mark.clone(),
            ..Default::default()
        })
    }

    pub async fn run_step(&self, spec: &StepSpec) -> Result<StepRun, ApiError> {
        let _busy = self.busy.lock().await;
        let started = Instant::now();
        let before = Pods::load(&self.backend);
        let mark = self.mark();
        let mut involved: Vec<String> = spec.watch.clone();
        let mut cli = spec.cli.clone();
        let (got, summary, outcome, pod) = match &spec.action {
            Action::Ship(ship) => {
                let pod = before.resolve(&ship.pod)?;
                involved.push(pod.clone());
                let ship = resolve_connect(ship, &before, &self.backend.services(), &pod);
                if ship.move_name() == "connect" {
                    cli = ship.cli();
                }
                let (got, summary, outcome) = self.ship(&pod, &ship).await;
                (got, summary, outcome, Some(pod))
            }
            Action::Exec { exec, timeout_ms } => {
                let pod = before.resolve(&exec.pod)?;
                involved.push(pod.clone());
                let req = ExecRequest {
                    argv: exec.argv.clone(),
                    timeout_ms: Some(*timeout_ms),
                };
                match self.backend.exec(&pod, req).await {
                    Ok(r) => {
                        let got = classify_exec(r.exit_code, r.timed_out);
                        let summary = match (r.exit_code, r.timed_out) {
                            (_, true) => {
                                format!("killed after {:.1}s", r.elapsed_ms as f64 / 1000.0)
                            }
                            (Some(28), _) => "curl: timed out (exit 28)".to_owned(),
                            (Some(7), _) => "curl: connection refused (exit 7)".to_owned(),
                            (Some(c), _) => {
                                let first = r.stdout.lines().next().unwrap_or_default();
                                format!(
                                    "exit {c}{}{first}",
                                    if first.is_empty() { "" } else { ": " }
                                )
                            }
                            (None, _) => "killed by a signal".to_owned(),
                        };
                        (
                            got,
                            summary,
                            serde_json::to_value(&r).unwrap_or_default(),
                            Some(pod),
                        )
                    }
                    Err(e) => (
                        Got::Error,
                        e.error.clone(),
                        json!({"error": e.error}),
                        Some(pod),
                    ),
                }
            }
            Action::Apply { source, yaml } => {
                let req = ApplyRequest {
                    source: source.clone(),
                    text: yaml.clone(),
                    dry_run: false,
                };
                match self.backend.apply_policies(req).await {
                    Ok(v) => {
                        let summary = describe_apply(&v);
                        (Got::Ok, summary, v, None)
                    }
                    Err(e) => {
                        let got = if e.status == 422 {
                            Got::Rejected
                        } else {
                            Got::Error
                        };
                        let first = e.error.lines().next().unwrap_or_default().to_owned();
                        (
                            got,
                            first,
                            serde_json::to_value(&e).unwrap_or_default(),
                            None,
                        )
                    }
                }
            }
            Action::Delete(what) => {
                let req = match what {
                    DeleteWhat::All => DeleteRequest {
                        all: true,
                        ..Default::default()
                    },
                    DeleteWhat::Name { name } => DeleteRequest {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    DeleteWhat::File { source, yaml } => DeleteRequest {
                        text: Some(yaml.clone()),
                        source: Some(source.clone()),
                        ..Default::default()
                    },
                };
                match self.backend.delete_policies(req).await {
                    Ok(v) => {
                        let summary = describe_deleted(&v);
                        (Got::Ok, summary, v, None)
                    }
                    // The state the step wants (no such policy) already holds.
                    Err(e) if e.status == 404 => (
                        Got::Ok,
                        format!("nothing to delete: {}", e.error),
                        serde_json::to_value(&e).unwrap_or_default(),
                        None,
                    ),
                    Err(e) => (
                        Got::Error,
                        e.error.clone(),
                        serde_json::to_value(&e).unwrap_or_default(),
                        None,
                    ),
                }
            }
        };
        tokio::time::sleep(std::time::Duration::from_millis(spec.settle_ms)).await;
        let after = Pods::load(&self.backend);
        let all = self.flows_since(&mark);
        let flow_checks: Vec<FlowCheck> = spec
            .flows
            .iter()
            .map(|want| FlowCheck {
                want: want.describe(),
                found: all.iter().any(|f| want.matches(&after, f)),
            })
            .collect();
        let flows: Vec<Arc<Value>> =
            all.into_iter()
                .filter(|f| {
                    involved.iter().any(|n| {
                        after.side_is(n, &f["source"]) || after.side_is(n, &f["destination"])
                    }) || spec.flows.iter().any(|w| w.matches(&after, f))
                })
                .collect();
        let output_check = spec.output.as_ref().map(|want| {
            let text = [
                &outcome["body"],
                &outcome["content"],
                &outcome["stdout"],
                &outcome["error"],
            ]
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("\n");
            OutputCheck {
                want: want.clone(),
                found: text.contains(want.as_str()),
            }
        });
        let restarts = restarted(&before, &after);
        let pass = spec.expect.matches(&got)
            && output_check.as_ref().is_none_or(|c| c.found)
            && flow_checks.iter().all(|c| c.found);
        Ok(StepRun {
            expected: spec.expect.describe(),
            got,
            summary,
            pass,
            outcome,
            pod,
            output_check,
            flow_checks,
            flows: newest(flows),
            restarts,
            cli,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn ship(&self, pod: &str, ship: &ShipAction) -> (Got, String, Value) {
        match self.backend.ship(pod, ship.body()).await {
            Ok(v) => {
                let got = classify_ship(&v);
                let summary = v["summary"].as_str().unwrap_or_default().to_owned();
                (got, summary, v)
            }
            Err(e) => (Got::Error, e.error.clone(), json!({"error": e.error})),
        }
    }

    /// An exercise check: the student's policy replaces the lab's policy set, then every
    /// expectation is probed with real traffic.
    pub async fn check(&self, ex: &Exercise, policy: &str) -> Result<CheckRun, ApiError> {
        let _busy = self.busy.lock().await;
        let source = format!("exercise {}", ex.id);
        let has_policy = !policy.trim().is_empty();
        if has_policy {
            self.backend
                .apply_policies(ApplyRequest {
                    source: source.clone(),
                    text: policy.to_owned(),
                    dry_run: true,
                })
                .await?;
        }
        let removed = self
            .backend
            .delete_policies(DeleteRequest {
                all: true,
                ..Default::default()
            })
            .await?;
        let removed: Vec<String> = removed["deleted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let applied = if has_policy {
            self.backend
                .apply_policies(ApplyRequest {
                    source,
                    text: policy.to_owned(),
                    dry_run: false,
                })
                .await?
        } else {
            Value::Null
        };
        let mut probes = Vec::new();
        for p in &ex.probes {
            let pods = Pods::load(&self.backend);
            let pod = pods.resolve(&p.ship.pod)?;
            let ship = resolve_connect(&p.ship, &pods, &self.backend.services(), &pod);
            let mark = self.mark();
            let (got, summary, _) = self.ship(&pod, &ship).await;
            tokio::time::sleep(std::time::Duration::from_millis(PROBE_SETTLE_MS)).await;
            let flows: Vec<Arc<Value>> = self
                .flows_since(&mark)
                .into_iter()
                .filter(|f| pods.side_is(&pod, &f["source"]))
                .collect();
            let right = p.expect.matches(&got);
            let (explain, advice) = if right {
                (Vec::new(), None)
            } else {
                let explain = explaining(&flows, &got);
                let advice = Some(advise(&p.expect, &got, &explain));
                (explain, advice)
            };
            probes.push(ProbeRun {
                n: p.n,
                says: p.says.clone(),
                cli: ship.cli(),
                expected: p.expect.describe(),
                got,
                summary,
                right,
                explain,
                hint: if right { None } else { p.hint.clone() },
                advice,
                flows: newest(flows),
            });
        }
        let right = probes.iter().filter(|p| p.right).count();
        let total = probes.len();
        Ok(CheckRun {
            removed,
            applied,
            probes,
            right,
            total,
            passed: right == total,
        })
    }
}

fn newest(mut flows: Vec<Arc<Value>>) -> Vec<Arc<Value>> {
    let skip = flows.len().saturating_sub(MAX_FLOWS);
    flows.drain(..skip);
    flows
}

fn restarted(before: &Pods, after: &Pods) -> Vec<String> {
    let old = before.restarts();
    after
        .restarts()
        .into_iter()
        .filter_map(|(pod, n)| {
            let was = *old.get(&pod)?;
            (n > was).then(|| format!("{pod}: restarts {was} → {n}"))
        })
        .collect()
}

fn describe_apply(v: &Value) -> String {
    let parts: Vec<String> = v["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap_or("applied"),
                r["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    if parts.is_empty() {
        "applied".into()
    } else {
        parts.join(", ")
    }
}

fn describe_deleted(v: &Value) -> String {
    let names: Vec<&str> = v["deleted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if names.is_empty() {
        "there were no policies: nothing to delete".into()
    } else {
        format!("deleted {}", names.join(", "))
    }
}

/// The flows that explain a wrong outcome: what dropped it, or what let it through.
fn explaining(flows: &[Arc<Value>], got: &Got) -> Vec<Arc<Value>> {
    let through = matches!(got, Got::Ok | Got::FtpOk | Got::Http(200..=299));
    let main: Vec<&Arc<Value>> = flows
        .iter()
        .filter(|f| !is_reply(f) && !is_dns(f))
        .collect();
    let pick: Vec<Arc<Value>> = if through {
        let audit: Vec<Arc<Value>> = main
            .iter()
            .filter(|f| f["verdict"] == "AUDIT")
            .map(|f| Arc::clone(f))
            .collect();
        if !audit.is_empty() {
            audit
        } else {
            // The first connection's decisions: its egress and its ingress.
            let first_port = main
                .iter()
                .find(|f| f["verdict"] == "FORWARDED")
                .map(|f| f["l4"]["TCP"]["source_port"].clone());
            let mut first: Vec<Arc<Value>> = main
                .iter()
                .filter(|f| {
                    f["verdict"] == "FORWARDED"
                        && Some(&f["l4"]["TCP"]["source_port"]) == first_port.as_ref()
                })
                .map(|f| Arc::clone(f))
                .collect();
            // The decision that names a policy first, then the receiver's before the sender's.
            first.sort_by_key(|f| {
                let named = ["ingress_allowed_by", "egress_allowed_by"]
                    .iter()
                    .any(|k| f[*k].as_array().is_some_and(|a| !a.is_empty()));
                (!named, f["traffic_direction"] != "INGRESS")
            });
            first
        }
    } else {
        let drops: Vec<Arc<Value>> = main
            .iter()
            .filter(|f| blocked_flow(f))
            .map(|f| Arc::clone(f))
            .collect();
        if drops.is_empty() {
            flows.iter().filter(|f| blocked_flow(f)).cloned().collect()
        } else {
            drops
        }
    };
    // Retransmitted SYNs repeat the same decision: keep one of each.
    let mut seen = Vec::new();
    pick.into_iter()
        .filter(|f| {
            let key = (
                f["traffic_direction"].clone(),
                f["policy_explanation"].clone(),
            );
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .take(2)
        .collect()
}

/// A hint from the kind of mistake and the flows that show it.
fn advise(expect: &Expect, got: &Got, flows: &[Arc<Value>]) -> String {
    let flow = flows.first().map(|f| &**f);
    let through = matches!(got, Got::Ok | Got::FtpOk | Got::Http(200..=299));
    let want_through = matches!(
        expect,
        Expect::Ok | Expect::FtpOk | Expect::Http { status: 200..=299 }
    );
    let Some(f) = flow else {
        return if through {
            "It got through, and no flow was recorded for it.".into()
        } else if matches!(got, Got::Error) {
            "The move failed before any packet was decided (for example a name that did not resolve: DNS needs egress to kube-dns on UDP 53).".into()
        } else {
            "No drop was recorded: the far end may have been down or busy. Try again.".into()
        };
    };
    let dir = f["traffic_direction"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let why = f["policy_explanation"].as_str().unwrap_or_default();
    if through && !want_through {
        if f["verdict"] == "AUDIT" {
            return format!(
                "A policy would drop this, but it is in audit mode, so the packet was forwarded and only reported ({why}). Turn audit mode off to enforce it."
            );
        }
        let unselected = |f: &Value| {
            f["policy_explanation"]
                .as_str()
                .is_some_and(|w| w.contains("no policy selects"))
        };
        if flows.len() > 1 && flows.iter().all(|f| unselected(f)) {
            let name = |side: &Value| side["pod_name"].as_str().unwrap_or("?").to_owned();
            return format!(
                "Nothing restricts this connection: no policy selects {} for egress, and none selects {} for ingress. A policy on either side, with rules in that direction, turns on default deny there.",
                name(&f["source"]),
                name(&f["destination"])
            );
        }
        if unselected(f) {
            return format!(
                "Nothing selects this pod for {dir}, so all {dir} traffic is allowed ({why}). A policy that selects it with rules in that direction turns on default deny."
            );
        }
        return format!(
            "A rule let this through ({why}). It is broader than the goal: narrow its peers or ports."
        );
    }
    if l7_denied(f) {
        return "The HTTP rules did not allow this request: method and path are regular expressions that must match the whole string.".into();
    }
    if f["drop_reason"] == 181 {
        return format!(
            "An explicit deny rule matched ({why}); deny rules win over every allow rule."
        );
    }
    format!(
        "Dropped at {dir} by default deny ({why}). A connection needs both the sender's egress and the receiver's ingress to allow it."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Backend, BoxFut, ExecResult};
    use std::sync::Mutex;

    /// A lab without a kernel: xwing landings are dropped once any policy exists.
    #[derive(Default)]
    struct Fake {
        policies: Mutex<Vec<String>>,
        flows: Mutex<Vec<Arc<Value>>>,
        tick: Mutex<u64>,
        restarts: Mutex<u64>,
    }

    impl Fake {
        fn flow(&self, src: &str, dst: &str, verdict: &str, why: &str) {
            let mut t = self.tick.lock().unwrap();
            *t += 1;
            self.flows.lock().unwrap().push(Arc::new(json!({
                "time": format!("2026-01-01T00:00:{:02}.000000000Z", *t),
                "verdict": verdict, "Type": "L3_L4", "is_reply": false,
                "traffic_direction": "INGRESS",
                "source": {"pod_name": src, "namespace": "default"},
                "destination": {"pod_name": dst, "namespace": "default"},
                "l4": {"TCP": {"source_port": 40000 + *t, "destination_port": 80}},
                "policy_explanation": why,
            })));
        }
    }

    impl Backend for Fake {
        fn status(&self) -> Value {
            json!({})
        }
        fn pods(&self) -> Value {
            json!([
                {"namespace": "default", "name": "xwing", "owner": null, "restarts": 0, "ready": true},
                {"namespace": "default", "name": "tiefighter", "owner": null, "restarts": 0, "ready": true},
                {"namespace": "default", "name": "deathstar-b", "owner": "deathstar", "restarts": *self.restarts.lock().unwrap(), "ready": true},
                {"namespace": "default", "name": "deathstar-a", "owner": "deathstar", "restarts": 0, "ready": true},
            ])
        }
        fn pod(&self, _: &str, _: &str) -> Option<Value> {
            None
        }
        fn pod_context(&self, _: &str, _: &str) -> Option<Value> {
            None
        }
        fn services(&self) -> Value {
            json!([])
        }
        fn endpoints(&self) -> Value {
            json!([])
        }
        fn identities(&self) -> Value {
            json!([])
        }
        fn policies(&self) -> Value {
            json!([])
        }
        fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<Value, ApiError>> {
            Box::pin(async move {
                if req.text.contains("fromEndpoint:") {
                    return Err(ApiError::new(422, "bad").with_details(json!([{"line": 3}])));
                }
                if !req.dry_run {
                    self.policies.lock().unwrap().push("rule1".into());
                }
                Ok(json!({"results": [{"action": "created", "name": "rule1"}]}))
            })
        }
        fn delete_policies(&self, _: DeleteRequest) -> BoxFut<'_, Result<Value, ApiError>> {
            Box::pin(async move {
                let gone: Vec<String> = std::mem::take(&mut *self.policies.lock().unwrap());
                Ok(json!({"deleted": gone}))
            })
        }
        fn set_policy_audit(
            &self,
            _: &str,
            _: &str,
            _: bool,
        ) -> BoxFut<'_, Result<Value, ApiError>> {
            Box::pin(async { Ok(json!({})) })
        }
        fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Value>> {
            let all = self.flows.lock().unwrap().clone();
            let mut out: Vec<_> = all.into_iter().filter(|f| filter.matches(f)).collect();
            if let Some(l) = filter.limit {
                let skip = out.len().saturating_sub(l);
                out.drain(..skip);
            }
            out
        }
        fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Value>> {
            tokio::sync::broadcast::channel(1).1
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn ship(&self, pod: &str, body: Value) -> BoxFut<'_, Result<Value, ApiError>> {
            let pod = pod.to_owned();
            Box::pin(async move {
                let policy = !self.policies.lock().unwrap().is_empty();
                let who = pod.trim_start_matches("default/");
                if body["move"]["move"] == "fire" {
                    *self.restarts.lock().unwrap() += 1;
                }
                if who == "xwing" && policy {
                    self.flow(
                        who,
                        "deathstar-a",
                        "DROPPED",
                        "ingress of default/deathstar-a: default deny by rule1",
                    );
                    Ok(json!({"kind": "timed_out", "summary": "timed out after 1.0s"}))
                } else {
                    self.flow(who, "deathstar-a", "FORWARDED", "ingress of default/deathstar-a: no policy selects it for ingress, everything is allowed");
                    Ok(
                        json!({"kind": "ok", "status": 200, "body": "Ship landed\n", "summary": "200 Ship landed"}),
                    )
                }
            })
        }
        fn exec(&self, _: &str, _: ExecRequest) -> BoxFut<'_, Result<ExecResult, ApiError>> {
            Box::pin(async {
                Ok(ExecResult {
                    exit_code: Some(28),
                    stdout: String::new(),
                    stderr: String::new(),
                    elapsed_ms: 1,
                    timed_out: false,
                })
            })
        }
        fn extension(&self, _: &str, _: Option<Value>) -> BoxFut<'_, Result<Value, ApiError>> {
            Box::pin(async { Err(ApiError::not_found("x")) })
        }
    }

    #[test]
    fn connect_targets_become_addresses() {
        let pods = Pods(vec![
            json!({"namespace": "default", "name": "ftp-secure", "ip": "10.244.0.6", "ready": true}),
            json!({"namespace": "default", "name": "deathstar-a", "owner": "deathstar", "ip": "10.244.0.2", "ready": true}),
        ]);
        let services = json!([{"namespace": "default", "name": "ftp-secure", "cluster_ip": "10.104.0.9", "ports": [{"port": 21}]}]);
        let addr = |s: &str| {
            let a = ShipAction::parse(s).unwrap();
            resolve_connect(&a, &pods, &services, "default/xwing").mv["addr"].clone()
        };
        assert_eq!(addr("xwing connect ftp-secure:21"), "10.104.0.9:21");
        assert_eq!(
            addr("xwing connect ftp-secure.default.svc.cluster.local:21"),
            "10.104.0.9:21"
        );
        assert_eq!(addr("xwing connect ftp-secure:30000"), "10.244.0.6:30000");
        assert_eq!(addr("xwing connect deathstar:80"), "10.244.0.2:80");
        assert_eq!(addr("xwing connect example.org:80"), "example.org:80");
        assert_eq!(addr("xwing connect 10.0.0.1:80"), "10.0.0.1:80");
    }

    fn spec(step: &str) -> StepSpec {
        let text = format!("---\ntitle: t\n---\n```step\ntitle: s\n{step}\n```\n");
        let dir =
            std::env::temp_dir().join(format!("web-runner-{}-{}", std::process::id(), step.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.md"), text).unwrap();
        let lesson = crate::content::Library::new(Some(dir.clone()))
            .lesson("t")
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        lesson.steps[0].spec.clone().unwrap()
    }

    #[tokio::test]
    async fn a_step_shows_the_flows_it_caused_and_restarts() {
        let fake = Arc::new(Fake::default());
        fake.flow("tiefighter", "deathstar-a", "FORWARDED", "old");
        let runner = Runner::new(fake.clone());
        let run = runner
            .run_step(&spec("ship: xwing fire\nexpect: ok\nsettle: 0\nflows:\n- {from: xwing, to: deathstar, verdict: FORWARDED, port: 80}"))
            .await
            .unwrap();
        assert!(run.pass, "{run:#?}");
        assert_eq!(run.pod.as_deref(), Some("default/xwing"));
        assert_eq!(run.flows.len(), 1, "only the new flow: {:#?}", run.flows);
        assert_eq!(run.flow_checks.len(), 1);
        assert!(run.flow_checks[0].found);
        assert_eq!(run.restarts, ["default/deathstar-b: restarts 0 → 1"]);
        assert_eq!(run.cli, "lab ship xwing fire");

        let exec = runner
            .run_step(&spec(
                "exec: xwing -- curl -s -m 1 deathstar/v1\nexpect: timeout\nsettle: 0",
            ))
            .await
            .unwrap();
        assert!(exec.pass);
        assert_eq!(exec.summary, "curl: timed out (exit 28)");
    }

    #[tokio::test]
    async fn a_check_grades_each_expectation_and_explains_wrong_cells() {
        let fake = Arc::new(Fake::default());
        let runner = Runner::new(fake.clone());
        let ex = crate::content::Library::default()
            .exercise("1-landing-rights")
            .expect("the built-in exercise");
        // No policy: the xwing lands, which the goal forbids.
        let wrong = runner.check(&ex, "").await.unwrap();
        assert!(!wrong.passed);
        let xwing = wrong
            .probes
            .iter()
            .find(|p| p.cli.contains("xwing land"))
            .unwrap();
        assert!(!xwing.right);
        assert_eq!(xwing.explain.len(), 1);
        assert!(xwing.advice.as_deref().unwrap().contains("Nothing selects"));
        assert!(xwing.hint.is_some());

        let right = runner
            .check(&ex, "kind: CiliumNetworkPolicy\n")
            .await
            .unwrap();
        assert!(right.passed, "{right:#?}");
        assert!(
            right
                .probes
                .iter()
                .all(|p| p.explain.is_empty() && p.hint.is_none())
        );

        let again = runner
            .check(&ex, "kind: CiliumNetworkPolicy\n")
            .await
            .unwrap();
        assert_eq!(again.removed, ["rule1"]);

        let bad = runner.check(&ex, "fromEndpoint:\n").await.unwrap_err();
        assert_eq!(bad.status, 422);
        assert!(bad.details.is_some());
    }
}
