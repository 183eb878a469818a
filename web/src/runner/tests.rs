//! The runner against a lab without a kernel: a backend that answers like the lab for a few
//! pods, so steps, checks and their grading are tested without root.

use super::*;
use crate::api::{Backend, BoxFut, ExecResult, ProxyState};
use model::{
    Applied, ApplyAction, AuditMode, ConntrackEntry, Drop, Endpoint, Identity, IpInfo, IpVersion,
    LimitStatus, Outcome, PodContext, PodPhase, PolicyAudit, PolicyEntry, ShipRequest, Status,
};
use std::net::Ipv4Addr;
use std::sync::Mutex;

/// A lab without a kernel: xwing landings are dropped once any policy exists.
#[derive(Default)]
struct Fake {
    policies: Mutex<Vec<String>>,
    flows: Mutex<Vec<Arc<Flow>>>,
    tick: Mutex<u64>,
    restarts: Mutex<u64>,
    /// The prefilter: denied CIDRs and bypassed NodePorts.
    prefilter: Mutex<(Vec<String>, Vec<u16>)>,
}

fn side(pod: &str) -> EndpointRef {
    EndpointRef {
        id: 0,
        identity: 0,
        labels: vec![],
        namespace: "default".into(),
        pod_name: pod.into(),
    }
}

fn pod(name: &str, owner: Option<&str>, ip: [u8; 4], restarts: u64) -> Pod {
    Pod {
        namespace: "default".into(),
        name: name.into(),
        labels: BTreeMap::new(),
        ip: Ipv4Addr::from(ip),
        node_interface: String::new(),
        netns: String::new(),
        netns_alive: true,
        identity: 0,
        endpoint_id: 0,
        image: String::new(),
        workload: String::new(),
        owner: owner.map(Into::into),
        phase: PodPhase::Running,
        ready: true,
        restarts,
        pid: None,
        last_exit: None,
        started_at: None,
        created: SystemTime::UNIX_EPOCH,
        log_file: Default::default(),
        source: String::new(),
    }
}

impl Fake {
    fn next_time(&self) -> (SystemTime, u16) {
        let mut t = self.tick.lock().unwrap();
        *t += 1;
        (
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600 + *t),
            40000 + *t as u16,
        )
    }

    fn push(
        &self,
        source: EndpointRef,
        ip: IpInfo,
        dst: &str,
        verdict: Verdict,
        dport: u16,
        why: &str,
    ) {
        let (time, sport) = self.next_time();
        // As the API would send it: Hubble's JSON.
        let flow: Flow = serde_json::from_value(serde_json::json!({
            "IP": ip, "Summary": "", "Type": "L3_L4",
            "source": source, "destination": side(dst),
            "is_reply": false, "node_name": "lab", "policy_explanation": why,
            "l4": {"TCP": {"source_port": sport, "destination_port": dport}},
            "time": model::time::rfc3339::format(time),
            "trace_observation_point": "TO_ENDPOINT", "traffic_direction": "INGRESS",
            "verdict": verdict,
        }))
        .unwrap();
        let flow = Flow {
            drop: (verdict == Verdict::Dropped).then_some(Drop {
                drop_reason: 133,
                drop_reason_desc: model::DropReason::PolicyDenied,
            }),
            ..flow
        };
        self.flows.lock().unwrap().push(Arc::new(flow));
    }

    fn flow(&self, src: &str, dst: &str, verdict: Verdict, why: &str) {
        let ip = IpInfo {
            destination: Ipv4Addr::new(10, 244, 0, 2),
            ip_version: IpVersion::IPv4,
            source: Ipv4Addr::new(10, 244, 0, 4),
        };
        self.push(side(src), ip, dst, verdict, 80, why);
    }

    fn state(&self) -> PrefilterState {
        let pf = self.prefilter.lock().unwrap();
        PrefilterState {
            interface: "ext0".into(),
            deny: pf.0.clone(),
            bypass_node_ports: pf.1.clone(),
            warning: None,
        }
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFut<'static, T> {
    Box::pin(async move { v })
}

impl Backend for Fake {
    fn status(&self) -> Status {
        Status {
            instance: "fake".into(),
            pid: 1,
            web: None,
            pods: 0,
            services: 0,
            node_netns: Default::default(),
            pod_range: "10.244.0.0/24".into(),
            started: SystemTime::UNIX_EPOCH,
            policies: 0,
        }
    }
    fn pods(&self) -> Vec<Pod> {
        vec![
            pod("xwing", None, [10, 244, 0, 4], 0),
            pod("tiefighter", None, [10, 244, 0, 5], 0),
            pod(
                "deathstar-b",
                Some("deathstar"),
                [10, 244, 0, 3],
                *self.restarts.lock().unwrap(),
            ),
            pod("deathstar-a", Some("deathstar"), [10, 244, 0, 2], 0),
            pod("inventory-a", Some("inventory"), [10, 244, 0, 9], 0),
        ]
    }
    fn pod(&self, _: &str, _: &str) -> Option<Pod> {
        None
    }
    fn hosts(&self) -> Vec<Host> {
        vec![Host {
            namespace: "world".into(),
            name: "attacker".into(),
            ip: Ipv4Addr::new(198, 51, 100, 66),
        }]
    }
    fn pod_context(&self, _: &str, _: &str) -> Option<PodContext> {
        None
    }
    fn services(&self) -> Vec<Service> {
        vec![]
    }
    fn endpoints(&self) -> Vec<Endpoint> {
        vec![]
    }
    fn identities(&self) -> Vec<Identity> {
        vec![]
    }
    fn conntrack(&self) -> Vec<ConntrackEntry> {
        vec![]
    }
    fn policies(&self) -> Vec<PolicyEntry> {
        vec![]
    }
    fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<ApplyResult, ApiError>> {
        Box::pin(async move {
            if req.text.contains("fromEndpoint:") {
                let detail = model::Located {
                    file: req.source.clone(),
                    line: 3,
                    column: 1,
                    field: String::new(),
                    message: "bad".into(),
                    hint: None,
                    kind: model::ErrorKind::Invalid,
                };
                return Err(ApiError::new(422, "bad").with_details(vec![detail]));
            }
            if !req.dry_run {
                self.policies.lock().unwrap().push("rule1".into());
            }
            Ok(ApplyResult {
                dry_run: req.dry_run,
                revision: None,
                results: vec![Applied {
                    kind: "CiliumNetworkPolicy".into(),
                    name: "rule1".into(),
                    namespace: Some("default".into()),
                    action: ApplyAction::Created,
                    audit: false,
                }],
            })
        })
    }
    fn delete_policies(&self, _: DeleteRequest) -> BoxFut<'_, Result<DeleteResult, ApiError>> {
        Box::pin(async move {
            let gone: Vec<String> = std::mem::take(&mut *self.policies.lock().unwrap());
            Ok(DeleteResult {
                deleted: gone,
                revision: 1,
            })
        })
    }
    fn set_policy_audit(
        &self,
        _: &str,
        _: &str,
        _: bool,
    ) -> BoxFut<'_, Result<PolicyAudit, ApiError>> {
        ready(Err(ApiError::not_found("x")))
    }
    fn audit_mode(&self) -> AuditMode {
        AuditMode { audit_mode: false }
    }
    fn set_audit_mode(&self, _: bool) -> BoxFut<'_, Result<AuditMode, ApiError>> {
        ready(Err(ApiError::not_found("x")))
    }
    fn limits(&self) -> Vec<LimitStatus> {
        vec![]
    }
    fn prefilter(&self) -> PrefilterState {
        self.state()
    }
    fn change_prefilter(
        &self,
        change: PrefilterChange,
    ) -> BoxFut<'_, Result<PrefilterState, ApiError>> {
        Box::pin(async move {
            {
                let mut pf = self.prefilter.lock().unwrap();
                match change {
                    PrefilterChange::Update { cidrs } => pf.0.extend(cidrs),
                    PrefilterChange::Delete { cidrs } => pf.0.retain(|c| !cidrs.contains(c)),
                    PrefilterChange::Bypass {
                        enabled: true,
                        unsafe_ok: false,
                        ..
                    } => return Err(ApiError::new(400, "confirm with --unsafe")),
                    PrefilterChange::Bypass {
                        node_port,
                        enabled: true,
                        ..
                    } => pf.1.push(node_port),
                    PrefilterChange::Bypass { node_port, .. } => pf.1.retain(|p| *p != node_port),
                }
            }
            Ok(self.state())
        })
    }
    fn matrix(&self, _: model::MatrixRequest) -> BoxFut<'_, Result<model::Matrix, ApiError>> {
        ready(Err(ApiError::new(501, "the fake backend has no matrix")))
    }

    fn audit(&self, req: AuditRequest) -> BoxFut<'_, Result<Vec<Finding>, ApiError>> {
        let finding = |severity, check: &str, location: String| Finding {
            severity,
            check: check.into(),
            location,
            problem: "p".into(),
            why: "w".into(),
            fix: "f".into(),
        };
        let mut out = Vec::new();
        for p in &self.prefilter.lock().unwrap().1 {
            out.push(finding(
                Severity::Critical,
                "prefilter-bypass",
                format!("prefilter on ext0, NodePort {p}"),
            ));
        }
        for f in &req.files {
            if f.text.contains("0.0.0.0/0") {
                out.push(finding(
                    Severity::High,
                    "wildcard-cidr",
                    format!("{}:12 (spec.ingress[0].fromCIDR)", f.source),
                ));
            }
        }
        ready(Ok(out))
    }
    fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Flow>> {
        let all = self.flows.lock().unwrap().clone();
        let mut out: Vec<_> = all.into_iter().filter(|f| filter.matches(f)).collect();
        if let Some(l) = filter.limit {
            let skip = out.len().saturating_sub(l);
            out.drain(..skip);
        }
        out
    }
    fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Flow>> {
        tokio::sync::broadcast::channel(1).1
    }
    fn metrics(&self) -> String {
        "# TYPE lab_nodeport_connections_total counter\nlab_nodeport_connections_total{source=\"internet\"} 3\nlab_nodeport_connections_total{source=\"internal\"} 2\n".into()
    }
    fn ship(&self, pod: &str, req: ShipRequest) -> BoxFut<'_, Result<ShipResult, ApiError>> {
        let pod = pod.to_owned();
        Box::pin(async move {
            let policy = !self.policies.lock().unwrap().is_empty();
            let who = pod.trim_start_matches("default/");
            if req.mv == Move::Fire {
                *self.restarts.lock().unwrap() += 1;
            }
            if let Move::Flood { .. } = req.mv {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                return Ok(Outcome::Flooded {
                    connected: 6,
                    refused: 194,
                    failed: 0,
                    elapsed_ms: 2500,
                }
                .into());
            }
            if pod == "world/attacker" {
                let ip = IpInfo {
                    destination: Ipv4Addr::new(10, 244, 0, 9),
                    ip_version: IpVersion::IPv4,
                    source: Ipv4Addr::new(198, 51, 100, 66),
                };
                let world = EndpointRef {
                    identity: 2,
                    labels: vec!["reserved:world".into()],
                    ..Default::default()
                };
                self.push(
                    world,
                    ip,
                    "inventory-a",
                    Verdict::Forwarded,
                    8080,
                    "allowed",
                );
                return Ok(Outcome::Ok {
                    status: 200,
                    body: "Leia Organa".into(),
                    elapsed_ms: 1,
                }
                .into());
            }
            if who == "xwing" && policy {
                self.flow(
                    who,
                    "deathstar-a",
                    Verdict::Dropped,
                    "ingress of default/deathstar-a: default deny by rule1",
                );
                Ok(Outcome::TimedOut { elapsed_ms: 1000 }.into())
            } else {
                self.flow(who, "deathstar-a", Verdict::Forwarded, "ingress of default/deathstar-a: no policy selects it for ingress, everything is allowed");
                Ok(Outcome::Ok {
                    status: 200,
                    body: "Ship landed\n".into(),
                    elapsed_ms: 1,
                }
                .into())
            }
        })
    }
    fn exec(&self, _: &str, _: ExecRequest) -> BoxFut<'_, Result<ExecResult, ApiError>> {
        ready(Ok(ExecResult {
            exit_code: Some(28),
            stdout: String::new(),
            stderr: String::new(),
            elapsed_ms: 1,
            timed_out: false,
        }))
    }
    fn set_proxy(&self, _: bool) -> BoxFut<'_, Result<ProxyState, ApiError>> {
        ready(Err(ApiError::not_found("x")))
    }
    fn shutdown(&self) {}
    fn bench_plot(&self, _: &str, _: &str) -> BoxFut<'_, Result<String, ApiError>> {
        ready(Err(ApiError::not_found("x")))
    }
}

#[test]
fn connect_targets_become_addresses() {
    let pods = Pods(vec![
        Member::Pod(Box::new(pod("ftp-secure", None, [10, 244, 0, 6], 0))),
        Member::Pod(Box::new(pod(
            "deathstar-a",
            Some("deathstar"),
            [10, 244, 0, 2],
            0,
        ))),
    ]);
    let services: Vec<Service> = serde_json::from_value(serde_json::json!([{
        "namespace": "default", "name": "ftp-secure", "type": "ClusterIP",
        "cluster_ip": "10.104.0.9", "selector": {}, "labels": {}, "dns": "",
        "ports": [{"name": null, "port": 21, "protocol": "TCP", "target_port": 21,
                   "node_port": null, "endpoints": []}]
    }]))
    .unwrap();
    let addr = |s: &str| {
        let a = ShipAction::parse(s).unwrap();
        match resolve_connect(&a, &pods, &services, "default/xwing").mv {
            Move::Connect { addr, .. } => addr,
            other => panic!("{other:?}"),
        }
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
    fake.flow("tiefighter", "deathstar-a", Verdict::Forwarded, "old");
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

#[tokio::test]
async fn prefilter_audit_and_metrics_steps() {
    let fake = Arc::new(Fake::default());
    fake.prefilter.lock().unwrap().0.push("192.0.2.0/24".into());
    let runner = Runner::new(fake.clone());
    let refused = runner
        .run_step(&spec(
            "prefilter: bypass --node-port 30007\nexpect: rejected\noutput: --unsafe",
        ))
        .await
        .unwrap();
    assert!(refused.pass, "{refused:#?}");
    assert_eq!(refused.got, Got::Rejected);
    let on = runner
        .run_step(&spec(
            "prefilter: bypass --node-port 30007 --unsafe\noutput: UNSAFE",
        ))
        .await
        .unwrap();
    assert!(on.pass, "{on:#?}");
    let audit = runner
        .run_step(&spec(
            "audit: policies/sw_l3_l4.yaml\nfindings: [prefilter-bypass]",
        ))
        .await
        .unwrap();
    assert!(audit.pass, "{audit:#?}");
    assert_eq!(audit.checks.len(), 1);
    assert!(audit.outcome.texts()[0].contains("CRITICAL [prefilter-bypass]"));
    let not_clean = runner
        .run_step(&spec("audit:\nfindings: clean"))
        .await
        .unwrap();
    assert!(!not_clean.pass);
    let reset = runner.run_step(&spec("prefilter: reset")).await.unwrap();
    assert!(reset.pass);
    assert_eq!(
        reset.cli,
        "lab prefilter delete --cidr 192.0.2.0/24 && lab prefilter bypass --node-port 30007 --off"
    );
    assert_eq!(*fake.prefilter.lock().unwrap(), (vec![], vec![]));
    let clean = runner
        .run_step(&spec("audit:\nfindings: clean"))
        .await
        .unwrap();
    assert!(clean.pass, "{clean:#?}");
    let internet = runner
        .run_step(&spec(
            "metrics: lab_nodeport_connections_total{source=\"internet\"}\nvalue: \"> 0\"",
        ))
        .await
        .unwrap();
    assert!(internet.pass, "{internet:#?}");
    assert_eq!(
        internet.summary,
        "lab_nodeport_connections_total{source=\"internet\"} 3"
    );
    let total = runner
        .run_step(&spec("metrics: lab_nodeport_connections_total\nvalue: 4"))
        .await
        .unwrap();
    assert!(!total.pass);
    assert_eq!(total.summary, "2 lines, total 5");
    assert_eq!(total.checks[0].want, "the total is == 4 (it is 5)");
}

#[tokio::test]
async fn hosts_outside_the_cluster_act_and_are_found_in_flows() {
    let fake = Arc::new(Fake::default());
    let runner = Runner::new(fake.clone());
    let run = runner
        .run_step(&spec("ship: attacker http GET http://203.0.113.10:30007/\nexpect: ok\nsettle: 0\noutput: Leia\nflows:\n- {from: attacker, to: inventory, verdict: FORWARDED, port: 8080}"))
        .await
        .unwrap();
    assert!(run.pass, "{run:#?}");
    assert_eq!(run.pod.as_deref(), Some("world/attacker"));
    assert_eq!(run.flows.len(), 1);
}

#[tokio::test]
async fn a_background_step_runs_beside_the_next_ones() {
    let fake = Arc::new(Fake::default());
    let runner = Arc::new(Runner::new(fake.clone()));
    let flood = spec("ship: xwing flood 200 15\nbackground: true\nexpect: refused\nsettle: 0");
    let started = runner.run("l/3", &flood).await.unwrap();
    assert_eq!(started.got, Got::Running);
    assert_eq!(started.background.as_deref(), Some("running"));
    assert!(!started.pass);
    let again = runner.run("l/3", &flood).await.unwrap();
    assert!(again.summary.starts_with("still under way"), "{again:#?}");
    // A step in the foreground is not held up by it.
    let t = Instant::now();
    let land = runner
        .run("l/4", &spec("ship: tiefighter land\nexpect: ok\nsettle: 0"))
        .await
        .unwrap();
    assert!(land.pass && t.elapsed() < Duration::from_secs(1));
    let done = runner.background_result("l/3").await.unwrap();
    assert!(done.pass, "{done:#?}");
    assert_eq!(done.background.as_deref(), Some("done"));
    assert_eq!(
        done.summary,
        "flood: 6 connections held, 194 refused, 0 failed"
    );
    assert_eq!(
        runner.background_result("l/3").await.unwrap_err().status,
        404
    );
}

#[tokio::test]
async fn a_check_can_reset_the_prefilter_and_audit_the_policy() {
    let fake = Arc::new(Fake::default());
    fake.prefilter.lock().unwrap().1.push(30007);
    let runner = Runner::new(fake.clone());
    let text = "---\ntitle: E\naudit: true\nreset_prefilter: true\n---\n```expect\n- says: the attacker gets in\n  ship: attacker http GET http://203.0.113.10:30007/\n  expect: ok\n```\n";
    let dir = std::env::temp_dir().join(format!("web-runner-ex-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("exercises")).unwrap();
    std::fs::write(dir.join("exercises/e.md"), text).unwrap();
    let ex = crate::content::Library::new(Some(dir.clone()))
        .exercise("e")
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let wide = runner
        .check(&ex, "kind: CiliumNetworkPolicy\nfromCIDR: [0.0.0.0/0]\n")
        .await
        .unwrap();
    assert_eq!(fake.prefilter.lock().unwrap().1, Vec::<u16>::new());
    assert!(
        wide.prefilter.as_deref().unwrap().contains("--off"),
        "{wide:#?}"
    );
    assert_eq!((wide.right, wide.total), (1, 2));
    let audit = wide.audit.unwrap();
    assert!(!audit.right);
    assert!(audit.findings[0].yours);
    assert!(audit.summary.contains("wildcard-cidr"));
    let narrow = runner
        .check(&ex, "kind: CiliumNetworkPolicy\nfromCIDR: [10.0.0.0/8]\n")
        .await
        .unwrap();
    assert!(narrow.passed, "{narrow:#?}");
    let empty = runner.check(&ex, "").await.unwrap();
    assert!(!empty.audit.unwrap().right);
}
