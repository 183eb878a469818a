//! Doing lesson steps and exercise probes for real, through the [`Backend`]: the action (a ship
//! move, a program in a pod, a policy applied or deleted, a prefilter change, an audit, a look
//! at the metrics), the outcome graded against the expectation, and the flows it caused (those
//! recorded since the action started, filtered to the pods involved), with the pods that
//! restarted meanwhile.
//!
//! One action runs at a time (a lock), so two students' clicks or a check and a step never
//! mix their flows or policies. A step marked `background` is the exception: it runs beside the
//! others (a flood that must go on while the next step shows its effect), and its result is
//! collected when it ends.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use model::{
    ApplyResult, AuditFile, AuditRequest, DeleteResult, EndpointRef, ExecResult, Finding, Flow,
    Host, Move, Pod, PrefilterChange, PrefilterState, Service, Severity, ShipResult,
    TrafficDirection, Verdict,
};
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    SharedBackend,
    actions::{
        Expect, FindingsExpect, Got, PrefilterAction, ShipAction, classify_exec, classify_ship,
        fmt_number,
    },
    api::{ApiError, ApplyRequest, DeleteRequest, ExecRequest, FlowFilter},
    content::{Action, DeleteWhat, Exercise, FlowExpect, StepSpec},
};

/// Most flows returned for one step or probe.
const MAX_FLOWS: usize = 120;
/// How long a probe keeps collecting flows after its move.
const PROBE_SETTLE_MS: u64 = 300;
/// How long Run waits for a background step before answering that it is under way (so that,
/// say, a flood has opened its connections when the next step starts).
const HEAD_START: Duration = Duration::from_secs(2);

/// The result of a background step, once it ended (an error as status and message).
type JobResult = Option<Result<StepRun, (u16, String)>>;

struct Job {
    started: Instant,
    pod: Option<String>,
    done: watch::Receiver<JobResult>,
}

pub struct Runner {
    backend: SharedBackend,
    busy: tokio::sync::Mutex<()>,
    /// Background steps by key (`lesson/step`), running or ended and not yet collected.
    jobs: std::sync::Mutex<HashMap<String, Job>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRun {
    pub expected: String,
    pub got: Got,
    /// One line: `200 Ship landed`, `timed out after 5.0s`, `created cnp/default/rule1`.
    pub summary: String,
    pub pass: bool,
    /// The full answer: the ship's outcome, the program's output, the API's answer or error;
    /// for prefilter, audit and metrics steps also `text`, what the command line would print.
    pub outcome: StepOutcome,
    /// The pod that acted, as `namespace/name`.
    pub pod: Option<String>,
    pub output_check: Option<OutputCheck>,
    pub flow_checks: Vec<FlowCheck>,
    /// Other checks: the findings an audit must report, the value a metric must have.
    pub checks: Vec<FlowCheck>,
    pub flows: Vec<Arc<Flow>>,
    /// "default/deathstar-…: restarts 0 → 1".
    pub restarts: Vec<String>,
    pub cli: String,
    pub elapsed_ms: u64,
    /// For a background step: `running` (Run answered while it goes on) or `done`.
    pub background: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputCheck {
    pub want: String,
    pub found: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlowCheck {
    pub want: String,
    pub found: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckRun {
    /// Policies removed before the student's was applied.
    pub removed: Vec<String>,
    /// What the prefilter reset did, for exercises with `reset_prefilter`.
    pub prefilter: Option<String>,
    /// What applying the student's policy did (`null` when the editor was empty).
    pub applied: Option<ApplyResult>,
    pub probes: Vec<ProbeRun>,
    /// The audit of the student's policy, for exercises with `audit`.
    pub audit: Option<AuditRun>,
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
    pub explain: Vec<Arc<Flow>>,
    /// The exercise's hint, for a wrong cell.
    pub hint: Option<String>,
    /// A hint derived from the explaining flow, for a wrong cell.
    pub advice: Option<String>,
    pub flows: Vec<Arc<Flow>>,
}

/// `lab audit` of the student's policy, graded: findings located in it at or above `level`
/// make it wrong; findings elsewhere in the lab are shown, not graded.
#[derive(Debug, Serialize)]
pub struct AuditRun {
    pub says: String,
    pub cli: String,
    pub expected: String,
    pub level: String,
    pub findings: Vec<GradedFinding>,
    pub summary: String,
    pub right: bool,
}

/// A finding of the audit of a student's policy.
#[derive(Debug, Serialize)]
pub struct GradedFinding {
    #[serde(flatten)]
    pub finding: Finding,
    /// Located in the student's policy.
    pub yours: bool,
    /// Yours and at or above the exercise's level: it makes the answer wrong.
    pub counts: bool,
}

/// What a step's action answered, shown by the page (`outcome`).
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum StepOutcome {
    Ship(ShipResult),
    Exec(ExecResult),
    Applied(ApplyResult),
    Deleted(DeleteResult),
    /// Refused or failed: the API's error (with located details for a refused policy).
    Error(ApiError),
    Prefilter {
        #[serde(flatten)]
        state: PrefilterState,
        text: String,
    },
    Audit {
        findings: Vec<Finding>,
        text: String,
    },
    Metrics {
        lines: Vec<String>,
        total: f64,
        text: String,
    },
    /// A background step that has not ended yet.
    Pending {},
}

impl StepOutcome {
    /// The texts a step's `output:` is looked for in: the body or fetched content, the
    /// program's output, the error, the printed text, the summary.
    fn texts(&self) -> Vec<&str> {
        match self {
            StepOutcome::Ship(r) => {
                let mut t = r.outcome.texts();
                t.push(&r.summary);
                t
            }
            StepOutcome::Exec(r) => vec![&r.stdout],
            StepOutcome::Error(e) => vec![&e.error],
            StepOutcome::Prefilter { text, .. }
            | StepOutcome::Audit { text, .. }
            | StepOutcome::Metrics { text, .. } => vec![text],
            StepOutcome::Applied(_) | StepOutcome::Deleted(_) | StepOutcome::Pending {} => vec![],
        }
    }
}

/// A member of the lab a lesson can name: a pod, or a host outside the cluster.
#[derive(Clone, Debug)]
enum Member {
    Pod(Box<Pod>),
    Host(Host),
}

impl Member {
    fn namespace(&self) -> &str {
        match self {
            Member::Pod(p) => &p.namespace,
            Member::Host(h) => &h.namespace,
        }
    }
    fn name(&self) -> &str {
        match self {
            Member::Pod(p) => &p.name,
            Member::Host(h) => &h.name,
        }
    }
    fn owner(&self) -> Option<&str> {
        match self {
            Member::Pod(p) => p.owner.as_deref(),
            Member::Host(_) => None,
        }
    }
    fn ready(&self) -> bool {
        match self {
            Member::Pod(p) => p.ready,
            Member::Host(_) => true,
        }
    }
    fn ip(&self) -> std::net::Ipv4Addr {
        match self {
            Member::Pod(p) => p.ip,
            Member::Host(h) => h.ip,
        }
    }
    fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}

/// The cluster's pods and the hosts outside it (the attacker, the monitor), to resolve names
/// written in lessons: a pod, `namespace/pod`, a Deployment (its pods), or a host.
struct Pods(Vec<Member>);

impl Pods {
    fn load(backend: &SharedBackend) -> Self {
        let pods = backend.pods().into_iter().map(|p| Member::Pod(Box::new(p)));
        let hosts = backend.hosts().into_iter().map(Member::Host);
        Self(pods.chain(hosts).collect())
    }

    /// Pods that `name` stands for: the pod itself, or every replica of a Deployment.
    fn members(&self, name: &str) -> Vec<&Member> {
        let (ns, n) = match name.split_once('/') {
            Some((ns, n)) => (Some(ns), n),
            None => (None, name),
        };
        let in_ns = |p: &&Member| ns.is_none_or(|ns| p.namespace() == ns);
        let exact: Vec<&Member> = self
            .0
            .iter()
            .filter(in_ns)
            .filter(|p| p.name() == n)
            .collect();
        if !exact.is_empty() {
            return exact;
        }
        let mut owned: Vec<&Member> = self
            .0
            .iter()
            .filter(in_ns)
            .filter(|p| p.owner() == Some(n))
            .collect();
        owned.sort_by_key(|p| (!p.ready(), p.key()));
        owned
    }

    /// The one pod that acts for `name` (a Deployment's first ready replica).
    fn resolve(&self, name: &str) -> Result<String, ApiError> {
        let members = self.members(name);
        let pick = members
            .iter()
            .find(|p| p.namespace() == "default")
            .or(members.first());
        pick.map(|p| p.key()).ok_or_else(|| {
            ApiError::not_found(format!(
                "no pod, Deployment or outside host named {name:?} in this lab"
            ))
        })
    }

    fn restarts(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter_map(|m| match m {
                Member::Pod(p) => Some((p.key(), p.restarts)),
                Member::Host(_) => None,
            })
            .collect()
    }

    /// Whether a flow's source (or destination) is one of the pods `name` stands for; a host
    /// outside the cluster is recognised by its address.
    fn side_is(&self, name: &str, flow: &Flow, source: bool) -> bool {
        let (side, ip) = if source {
            (&flow.source, flow.ip.source)
        } else {
            (&flow.destination, flow.ip.destination)
        };
        self.members(name).iter().any(|m| match m {
            Member::Host(h) => side.pod_name.is_empty() && h.ip == ip,
            Member::Pod(p) => {
                !side.pod_name.is_empty()
                    && p.name == side.pod_name
                    && p.namespace == side.namespace
            }
        })
    }

    fn involves(&self, name: &str, flow: &Flow) -> bool {
        self.side_is(name, flow, true) || self.side_is(name, flow, false)
    }
}

/// For a `connect` move, a service name becomes its cluster IP (when the port is one of the
/// service's) and a pod or Deployment name becomes the pod's IP — the way the lab hands
/// workloads their addresses at start — so a probe does not depend on DNS being allowed.
fn resolve_connect(
    ship: &ShipAction,
    pods: &Pods,
    services: &[Service],
    acting: &str,
) -> ShipAction {
    let Move::Connect { addr, timeout_ms } = &ship.mv else {
        return ship.clone();
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return ship.clone();
    };
    let Ok(port) = port.parse::<u16>() else {
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
    let service_ip = services
        .iter()
        .find(|svc| {
            svc.name == name && svc.namespace == ns && svc.ports.iter().any(|p| p.port == port)
        })
        .map(|svc| svc.cluster_ip);
    let ip = service_ip.or_else(|| {
        let members = pods.members(&format!("{ns}/{name}"));
        let p = members
            .iter()
            .find(|p| p.ready() && matches!(p, Member::Pod(_)))
            .or(members.first())?;
        Some(p.ip())
    });
    let mut out = ship.clone();
    if let Some(ip) = ip {
        out.mv = Move::Connect {
            addr: format!("{ip}:{port}"),
            timeout_ms: *timeout_ms,
        };
    }
    out
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

    fn matches(&self, pods: &Pods, f: &Flow) -> bool {
        self.from
            .as_deref()
            .is_none_or(|n| pods.side_is(n, f, true))
            && self.to.as_deref().is_none_or(|n| pods.side_is(n, f, false))
            && self
                .verdict
                .as_deref()
                .is_none_or(|v| f.verdict.name().eq_ignore_ascii_case(v))
            && self.port.is_none_or(|p| f.destination_port() == Some(p))
    }
}

/// The time of the newest flow: flows after it were caused by what comes next.
fn mark(backend: &SharedBackend) -> Option<SystemTime> {
    backend
        .flows(&FlowFilter {
            limit: Some(1),
            ..Default::default()
        })
        .last()
        .map(|f| f.time)
}

fn flows_since(backend: &SharedBackend, mark: Option<SystemTime>) -> Vec<Arc<Flow>> {
    backend.flows(&FlowFilter {
        since: mark,
        ..Default::default()
    })
}

/// What an action did: the outcome in the expectation's vocabulary, one line, the full answer,
/// the pod that acted, the other checks, and the command line it really ran.
struct Done {
    got: Got,
    summary: String,
    outcome: StepOutcome,
    pod: Option<String>,
    checks: Vec<FlowCheck>,
    cli: Option<String>,
}

impl Done {
    fn new(got: Got, summary: impl Into<String>, outcome: StepOutcome) -> Self {
        Self {
            got,
            summary: summary.into(),
            outcome,
            pod: None,
            checks: Vec::new(),
            cli: None,
        }
    }

    /// An API error: refused by the lab (4xx) or failed (5xx).
    fn refused(e: &ApiError) -> Self {
        let got = if (400..500).contains(&e.status) {
            Got::Rejected
        } else {
            Got::Error
        };
        let first = e.error.lines().next().unwrap_or_default().to_owned();
        Self::new(got, first, StepOutcome::Error(e.clone()))
    }
}

/// Does a step: the action, then `settle`, then the flows, checks and restarts. Takes no lock.
async fn perform(backend: &SharedBackend, spec: &StepSpec) -> Result<StepRun, ApiError> {
    let started = Instant::now();
    let before = Pods::load(backend);
    let mark = mark(backend);
    let mut involved: Vec<String> = spec.watch.clone();
    let done = match &spec.action {
        Action::Ship(ship) => {
            let pod = before.resolve(&ship.pod)?;
            involved.push(pod.clone());
            let ship = resolve_connect(ship, &before, &backend.services(), &pod);
            let (got, summary, outcome) = do_ship(backend, &pod, &ship).await;
            Done {
                pod: Some(pod),
                cli: (ship.move_name() == "connect").then(|| ship.cli()),
                ..Done::new(got, summary, outcome)
            }
        }
        Action::Exec { exec, timeout_ms } => {
            let pod = before.resolve(&exec.pod)?;
            involved.push(pod.clone());
            let req = ExecRequest {
                argv: exec.argv.clone(),
                timeout_ms: Some(*timeout_ms),
            };
            let d = match backend.exec(&pod, req).await {
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
                    Done::new(got, summary, StepOutcome::Exec(r))
                }
                Err(e) => Done::new(Got::Error, e.error.clone(), StepOutcome::Error(e)),
            };
            Done {
                pod: Some(pod),
                ..d
            }
        }
        Action::Apply { source, yaml } => {
            let req = ApplyRequest {
                source: source.clone(),
                text: yaml.clone(),
                dry_run: false,
            };
            match backend.apply_policies(req).await {
                Ok(v) => Done::new(Got::Ok, v.describe(), StepOutcome::Applied(v)),
                Err(e) if e.status == 422 => Done::refused(&e),
                Err(e) => Done {
                    got: Got::Error,
                    ..Done::refused(&e)
                },
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
            match backend.delete_policies(req).await {
                Ok(v) => Done::new(Got::Ok, v.describe(), StepOutcome::Deleted(v)),
                // The state the step wants (no such policy) already holds.
                Err(e) if e.status == 404 => Done::new(
                    Got::Ok,
                    format!("nothing to delete: {}", e.error),
                    StepOutcome::Error(e),
                ),
                Err(e) => Done::new(Got::Error, e.error.clone(), StepOutcome::Error(e)),
            }
        }
        Action::Prefilter(p) => prefilter(backend, p).await,
        Action::Audit { files } => {
            let req = AuditRequest {
                files: files.clone(),
            };
            match backend.audit(req).await {
                Ok(findings) => {
                    let checks = match &spec.findings {
                        None => Vec::new(),
                        Some(FindingsExpect::Clean) => vec![FlowCheck {
                            want: "the audit reports no findings".into(),
                            found: findings.is_empty(),
                        }],
                        Some(FindingsExpect::Include(want)) => want
                            .iter()
                            .map(|c| FlowCheck {
                                want: format!("the audit reports {c}"),
                                found: findings.iter().any(|f| f.check == *c),
                            })
                            .collect(),
                    };
                    Done {
                        checks,
                        ..Done::new(Got::Ok, describe_findings(&findings), {
                            let text = render_findings(&findings);
                            StepOutcome::Audit { findings, text }
                        })
                    }
                }
                Err(e) => Done::refused(&e),
            }
        }
        Action::Metrics(q) => {
            let text = backend.metrics();
            let lines: Vec<String> = text
                .lines()
                .filter(|l| q.sample(l).is_some())
                .map(str::to_owned)
                .collect();
            let total: f64 = lines.iter().filter_map(|l| q.sample(l)).sum();
            let summary = match lines.as_slice() {
                [] => format!("no line of {} yet (counts as 0)", q.name),
                [one] => one.clone(),
                many => format!("{} lines, total {}", many.len(), fmt_number(total)),
            };
            let checks = spec
                .value
                .iter()
                .map(|v| FlowCheck {
                    want: format!(
                        "the total is {} (it is {})",
                        v.describe(),
                        fmt_number(total)
                    ),
                    found: v.holds(total),
                })
                .collect();
            Done {
                checks,
                ..Done::new(
                    Got::Ok,
                    summary,
                    StepOutcome::Metrics {
                        text: lines.join("\n"),
                        lines,
                        total,
                    },
                )
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(spec.settle_ms)).await;
    let after = Pods::load(backend);
    let all = flows_since(backend, mark);
    let flow_checks: Vec<FlowCheck> = spec
        .flows
        .iter()
        .map(|want| FlowCheck {
            want: want.describe(),
            found: all.iter().any(|f| want.matches(&after, f)),
        })
        .collect();
    let flows: Vec<Arc<Flow>> = all
        .into_iter()
        .filter(|f| {
            involved.iter().any(|n| after.involves(n, f))
                || spec.flows.iter().any(|w| w.matches(&after, f))
        })
        .collect();
    let outcome = done.outcome;
    let output_check = spec.output.as_ref().map(|want| {
        let text = outcome
            .texts()
            .into_iter()
            .chain([done.summary.as_str()])
            .collect::<Vec<_>>()
            .join("\n");
        OutputCheck {
            want: want.clone(),
            found: text.contains(want.as_str()),
        }
    });
    let restarts = restarted(&before, &after);
    let pass = spec.expect.matches(&done.got)
        && output_check.as_ref().is_none_or(|c| c.found)
        && flow_checks.iter().all(|c| c.found)
        && done.checks.iter().all(|c| c.found);
    Ok(StepRun {
        expected: spec.expected(),
        got: done.got,
        summary: done.summary,
        pass,
        outcome,
        pod: done.pod,
        output_check,
        flow_checks,
        checks: done.checks,
        flows: newest(flows),
        restarts,
        cli: done.cli.unwrap_or_else(|| spec.cli.clone()),
        elapsed_ms: started.elapsed().as_millis() as u64,
        background: spec.background.then(|| "done".to_owned()),
    })
}

async fn do_ship(
    backend: &SharedBackend,
    pod: &str,
    ship: &ShipAction,
) -> (Got, String, StepOutcome) {
    match backend.ship(pod, ship.request()).await {
        Ok(r) => (
            classify_ship(&r.outcome),
            r.summary.clone(),
            StepOutcome::Ship(r),
        ),
        Err(e) => (Got::Error, e.error.clone(), StepOutcome::Error(e)),
    }
}

/// A prefilter step: a change or a look through `/api/x/prefilter`; `reset` lists the state and
/// undoes each entry, and shows the commands that did it.
async fn prefilter(backend: &SharedBackend, p: &PrefilterAction) -> Done {
    let shown = |state: PrefilterState| {
        let text = state.describe();
        (text.clone(), StepOutcome::Prefilter { state, text })
    };
    match p {
        PrefilterAction::List => {
            let (text, out) = shown(backend.prefilter());
            Done::new(Got::Ok, text, out)
        }
        PrefilterAction::Change(change) => match backend.change_prefilter(change.clone()).await {
            Ok(state) => {
                let (text, out) = shown(state);
                Done::new(Got::Ok, text, out)
            }
            Err(e) => Done::refused(&e),
        },
        PrefilterAction::Reset => {
            let state = backend.prefilter();
            let mut changes = Vec::new();
            if !state.deny.is_empty() {
                changes.push(PrefilterChange::Delete {
                    cidrs: state.deny.clone(),
                });
            }
            for port in &state.bypass_node_ports {
                changes.push(PrefilterChange::Bypass {
                    node_port: *port,
                    enabled: false,
                    unsafe_ok: false,
                });
            }
            let mut last = state;
            let mut commands = Vec::new();
            for change in changes {
                commands.push(PrefilterAction::Change(change.clone()).cli());
                match backend.change_prefilter(change).await {
                    Ok(s) => last = s,
                    Err(e) => return Done::refused(&e),
                }
            }
            let (text, out) = shown(last);
            let summary = if commands.is_empty() {
                format!("nothing to undo: {text}")
            } else {
                format!("reset: {text}")
            };
            Done {
                cli: Some(if commands.is_empty() {
                    "lab prefilter list".into()
                } else {
                    commands.join(" && ")
                }),
                ..Done::new(Got::Ok, summary, out)
            }
        }
    }
}

/// "2 findings: 1 critical, 1 high" or "no findings".
fn describe_findings(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "lab audit: no findings".into();
    }
    let mut by: Vec<String> = Vec::new();
    for level in [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
    ] {
        let n = findings.iter().filter(|f| f.severity == level).count();
        if n > 0 {
            by.push(format!("{n} {}", level.name()));
        }
    }
    let checks: Vec<&str> = findings.iter().map(|f| f.check.as_str()).collect();
    format!(
        "{} finding{}: {} ({})",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" },
        by.join(", "),
        checks.join(", ")
    )
}

/// The findings as `lab audit` prints them.
fn render_findings(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&f.render());
        out.push('\n');
    }
    out.push_str(&describe_findings(findings));
    out
}

impl Runner {
    pub fn new(backend: SharedBackend) -> Self {
        Self {
            backend,
            busy: tokio::sync::Mutex::new(()),
            jobs: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Does a step now (one at a time), or starts it in the background (see [`Self::run`]).
    pub async fn run_step(&self, spec: &StepSpec) -> Result<StepRun, ApiError> {
        self.run(&spec.cli, spec).await
    }

    /// Does a step. A background step (`key` names it, e.g. `lesson/3`) starts beside the
    /// others; the answer comes when it ends or after [`HEAD_START`], whichever is first, and in
    /// the second case says it is running: [`Self::background_result`] waits for the end. Run
    /// again while it runs, it only says so; a new background step first waits for those still
    /// running (one flood at a time).
    pub async fn run(&self, key: &str, spec: &StepSpec) -> Result<StepRun, ApiError> {
        if !spec.background {
            let _busy = self.busy.lock().await;
            return perform(&self.backend, spec).await;
        }
        let running: Vec<watch::Receiver<JobResult>> = {
            let mut jobs = self.jobs.lock().expect("jobs");
            if let Some(job) = jobs.get(key)
                && job.done.borrow().is_none()
            {
                return Ok(running_run(spec, job.started, job.pod.clone(), true));
            }
            jobs.remove(key);
            jobs.values()
                .filter(|j| j.done.borrow().is_none())
                .map(|j| j.done.clone())
                .collect()
        };
        for mut rx in running {
            let _ = rx.wait_for(Option::is_some).await;
        }
        let pod = match &spec.action {
            Action::Ship(s) => Some(s.pod.clone()),
            Action::Exec { exec, .. } => Some(exec.pod.clone()),
            _ => None,
        };
        let (tx, mut rx) = watch::channel(None);
        let job = Job {
            started: Instant::now(),
            pod,
            done: rx.clone(),
        };
        let (started, acting) = (job.started, job.pod.clone());
        self.jobs.lock().expect("jobs").insert(key.to_owned(), job);
        let backend = self.backend.clone();
        let owned = spec.clone();
        tokio::spawn(async move {
            let r = perform(&backend, &owned)
                .await
                .map_err(|e| (e.status, e.error));
            let _ = tx.send(Some(r));
        });
        if tokio::time::timeout(HEAD_START, rx.wait_for(Option::is_some))
            .await
            .is_ok()
        {
            return self.background_result(key).await;
        }
        Ok(running_run(spec, started, acting, false))
    }

    /// Waits for the background step `key` to end and returns its result (once).
    pub async fn background_result(&self, key: &str) -> Result<StepRun, ApiError> {
        let rx = self
            .jobs
            .lock()
            .expect("jobs")
            .get(key)
            .map(|j| j.done.clone());
        let Some(mut rx) = rx else {
            return Err(ApiError::not_found(
                "this step is not running in the background: run it first",
            ));
        };
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ApiError::new(500, "the background step was lost"))?
            .clone();
        self.jobs.lock().expect("jobs").remove(key);
        match result {
            Some(Ok(run)) => Ok(run),
            Some(Err((status, error))) => Err(ApiError::new(status, error)),
            None => Err(ApiError::new(500, "the background step was lost")),
        }
    }

    /// An exercise check: the student's policy replaces the lab's policy set (and, if the
    /// exercise says so, the prefilter is emptied), then every expectation is probed with real
    /// traffic, and the policy is audited if the exercise asks for it.
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
        let removed = removed.deleted;
        let prefilter = if ex.reset_prefilter {
            let done = prefilter(&self.backend, &PrefilterAction::Reset).await;
            if matches!(done.got, Got::Rejected | Got::Error) {
                return Err(ApiError::new(
                    500,
                    format!("resetting the prefilter failed: {}", done.summary),
                ));
            }
            Some(match done.cli {
                Some(cli) if cli != "lab prefilter list" => format!("{} ({cli})", done.summary),
                _ => done.summary,
            })
        } else {
            None
        };
        let applied = if has_policy {
            Some(
                self.backend
                    .apply_policies(ApplyRequest {
                        source: source.clone(),
                        text: policy.to_owned(),
                        dry_run: false,
                    })
                    .await?,
            )
        } else {
            None
        };
        let mut probes = Vec::new();
        for p in &ex.probes {
            let pods = Pods::load(&self.backend);
            let pod = pods.resolve(&p.ship.pod)?;
            let ship = resolve_connect(&p.ship, &pods, &self.backend.services(), &pod);
            let mark = mark(&self.backend);
            let (got, summary, _) = do_ship(&self.backend, &pod, &ship).await;
            tokio::time::sleep(Duration::from_millis(PROBE_SETTLE_MS)).await;
            let flows: Vec<Arc<Flow>> = flows_since(&self.backend, mark)
                .into_iter()
                .filter(|f| pods.side_is(&pod, f, true))
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
        let audit = match &ex.audit {
            Some(level) => Some(self.audit_policy(&source, policy, level).await?),
            None => None,
        };
        let right = probes.iter().filter(|p| p.right).count()
            + usize::from(audit.as_ref().is_some_and(|a| a.right));
        let total = probes.len() + usize::from(audit.is_some());
        Ok(CheckRun {
            removed,
            prefilter,
            applied,
            probes,
            audit,
            right,
            total,
            passed: right == total,
        })
    }

    /// `lab audit` of the lab with the student's policy: wrong if a finding located in the
    /// policy is at or above `level`.
    async fn audit_policy(
        &self,
        source: &str,
        policy: &str,
        level: &str,
    ) -> Result<AuditRun, ApiError> {
        let threshold = Severity::parse(&level.to_ascii_lowercase()).unwrap_or(Severity::Medium);
        let says =
            format!("Your policy passes lab audit: no finding of {level} severity or above in it");
        let expected = format!("no finding at {level} or above in your policy");
        let cli = "lab audit -f my-policy.yaml".to_owned();
        if policy.trim().is_empty() {
            return Ok(AuditRun {
                says,
                cli,
                expected,
                level: level.to_owned(),
                findings: Vec::new(),
                summary: "the editor is empty: there is no policy to audit".into(),
                right: false,
            });
        }
        let found = self
            .backend
            .audit(AuditRequest {
                files: vec![AuditFile {
                    source: source.to_owned(),
                    text: policy.to_owned(),
                }],
            })
            .await?;
        let prefix = format!("{source}:");
        let findings: Vec<GradedFinding> = found
            .into_iter()
            .map(|finding| {
                let yours = finding.location.starts_with(&prefix);
                GradedFinding {
                    counts: yours && finding.severity >= threshold,
                    yours,
                    finding,
                }
            })
            .collect();
        let counted: Vec<&str> = findings
            .iter()
            .filter(|f| f.counts)
            .map(|f| f.finding.check.as_str())
            .collect();
        let others = findings.iter().filter(|f| !f.yours).count();
        let mut summary = if counted.is_empty() {
            format!("no finding at {level} or above in your policy")
        } else {
            format!("{} in your policy: {}", counted.len(), counted.join(", "))
        };
        if others > 0 {
            summary.push_str(&format!(
                " ({others} about the rest of the lab, not graded)"
            ));
        }
        Ok(AuditRun {
            says,
            cli,
            expected,
            level: level.to_owned(),
            right: counted.is_empty(),
            findings,
            summary,
        })
    }
}

/// What a background step says while it runs.
fn running_run(spec: &StepSpec, started: Instant, pod: Option<String>, again: bool) -> StepRun {
    let secs = started.elapsed().as_secs_f64();
    let summary = if again {
        format!("still under way (started {secs:.0} s ago): its result shows here when it ends")
    } else {
        "under way: go on with the next step; its result shows here when it ends".to_owned()
    };
    StepRun {
        expected: spec.expected(),
        got: Got::Running,
        summary,
        pass: false,
        outcome: StepOutcome::Pending {},
        pod,
        output_check: None,
        flow_checks: Vec::new(),
        checks: Vec::new(),
        flows: Vec::new(),
        restarts: Vec::new(),
        cli: spec.cli.clone(),
        elapsed_ms: (secs * 1000.0) as u64,
        background: Some("running".into()),
    }
}

fn newest(mut flows: Vec<Arc<Flow>>) -> Vec<Arc<Flow>> {
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

/// The flows that explain a wrong outcome: what dropped it, or what let it through.
fn explaining(flows: &[Arc<Flow>], got: &Got) -> Vec<Arc<Flow>> {
    let through = matches!(got, Got::Ok | Got::FtpOk | Got::Http(200..=299));
    let main: Vec<&Arc<Flow>> = flows
        .iter()
        .filter(|f| !f.is_reply && !f.is_dns())
        .collect();
    let pick: Vec<Arc<Flow>> = if through {
        let audit: Vec<Arc<Flow>> = main
            .iter()
            .filter(|f| f.verdict == Verdict::Audit)
            .map(|f| Arc::clone(f))
            .collect();
        if !audit.is_empty() {
            audit
        } else {
            // The first connection's decisions: its egress and its ingress.
            let tcp_source_port = |f: &Flow| f.l4.tcp.as_ref().map(|t| t.source_port);
            let first_port = main
                .iter()
                .find(|f| f.verdict == Verdict::Forwarded)
                .map(|f| tcp_source_port(f));
            let mut first: Vec<Arc<Flow>> = main
                .iter()
                .filter(|f| {
                    f.verdict == Verdict::Forwarded && Some(tcp_source_port(f)) == first_port
                })
                .map(|f| Arc::clone(f))
                .collect();
            // The decision that names a policy first, then one taken at a pod (not the
            // NodePort translation on the node), then the receiver's before the sender's.
            first.sort_by_key(|f| {
                let named = !f.ingress_allowed_by.is_empty() || !f.egress_allowed_by.is_empty();
                let at_pod = !f.destination.pod_name.is_empty() || !f.source.pod_name.is_empty();
                (
                    !named,
                    !at_pod,
                    f.traffic_direction != TrafficDirection::Ingress,
                )
            });
            first
        }
    } else {
        let drops: Vec<Arc<Flow>> = main
            .iter()
            .filter(|f| f.is_blocked())
            .map(|f| Arc::clone(f))
            .collect();
        if drops.is_empty() {
            flows.iter().filter(|f| f.is_blocked()).cloned().collect()
        } else {
            drops
        }
    };
    // Retransmitted SYNs repeat the same decision: keep one of each.
    let mut seen = Vec::new();
    pick.into_iter()
        .filter(|f| {
            let key = (f.traffic_direction, f.policy_explanation.clone());
            let new = !seen.contains(&key);
            seen.push(key);
            new
        })
        .take(2)
        .collect()
}

/// A hint from the kind of mistake and the flows that show it.
fn advise(expect: &Expect, got: &Got, flows: &[Arc<Flow>]) -> String {
    let through = matches!(got, Got::Ok | Got::FtpOk | Got::Http(200..=299));
    let want_through = matches!(
        expect,
        Expect::Ok | Expect::FtpOk | Expect::Http { status: 200..=299 }
    );
    let Some(f) = flows.first() else {
        return if through {
            "It got through, and no flow was recorded for it.".into()
        } else if matches!(got, Got::Error) {
            "The move failed before any packet was decided (for example a name that did not resolve: DNS needs egress to kube-dns on UDP 53).".into()
        } else {
            "No drop was recorded: the far end may have been down or busy. Try again.".into()
        };
    };
    let dir = f.traffic_direction.lower();
    let why = &f.policy_explanation;
    if through && !want_through {
        if f.verdict == Verdict::Audit {
            return format!(
                "A policy would drop this, but it is in audit mode, so the packet was forwarded and only reported ({why}). Turn audit mode off to enforce it."
            );
        }
        let unselected = |f: &Flow| f.policy_explanation.contains("no policy selects");
        if flows.len() > 1 && flows.iter().all(|f| unselected(f)) {
            let name = |side: &EndpointRef| {
                if side.pod_name.is_empty() {
                    "?".to_owned()
                } else {
                    side.pod_name.clone()
                }
            };
            return format!(
                "Nothing restricts this connection: no policy selects {} for egress, and none selects {} for ingress. A policy on either side, with rules in that direction, turns on default deny there.",
                name(&f.source),
                name(&f.destination)
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
    if f.is_l7_denied() {
        return "The HTTP rules did not allow this request: method and path are regular expressions that must match the whole string.".into();
    }
    if f.drop.is_some_and(|d| d.drop_reason == 181) {
        return format!(
            "An explicit deny rule matched ({why}); deny rules win over every allow rule."
        );
    }
    format!(
        "Dropped at {dir} by default deny ({why}). A connection needs both the sender's egress and the receiver's ingress to allow it."
    )
}

#[cfg(test)]
mod tests;
