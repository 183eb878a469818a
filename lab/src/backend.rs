//! The lab as the web crate's [`Backend`]: what the control API and the page can see and do,
//! as the plain types of the `model` crate.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use model::{
    ApplyResult, AuditMode, AuditRequest, ConntrackEntry, DeleteResult, Endpoint, Finding, Flow,
    Host, Identity, LimitStatus, Pod, PodContext, PodPhase, PolicyAudit, PolicyEntry, PortRef,
    PrefilterChange, PrefilterState, Service, ServicePort, ShipRequest, ShipResult, Status,
};
use web::api::{
    ApiError, ApplyRequest, BoxFut, DeleteRequest, ExecRequest, ExecResult, FlowFilter, ProxyRun,
    ProxyState,
};

use crate::{
    cluster::{self, ServiceType, TargetPort, Workload},
    control::{Lab, PodRuntime, ServiceRuntime},
    spawn::InPod,
    supervisor::Phase,
    sys,
};

pub struct LabBackend(pub Arc<Lab>);

impl LabBackend {
    fn lab(&self) -> &Lab {
        &self.0
    }

    /// Runs `f` on a blocking thread with the lab (policy changes write maps and files).
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Lab) -> Result<T, ApiError> + Send + 'static,
    ) -> BoxFut<'static, Result<T, ApiError>> {
        let lab = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&lab))
                .await
                .map_err(|e| ApiError::new(500, e.to_string()))?
        })
    }
}

/// Runs `argv` inside a pod and captures its output (stdin closed), with a time limit.
pub async fn exec_captured(
    lab: &Lab,
    pod: &str,
    req: &ExecRequest,
) -> Result<ExecResult, ApiError> {
    let ctx = lab
        .context_of(pod)
        .ok_or_else(|| ApiError::not_found(format!("pod {pod} not found")))?;
    let (program, args) = req
        .argv
        .split_first()
        .ok_or_else(|| ApiError::new(400, "empty command"))?;
    // `lab` here (ships, load generator) runs the very program serving this call.
    let mut cmd = tokio::process::Command::from(
        ctx.command(program, args)
            .map_err(|e| ApiError::new(500, format!("{e:#}")))?,
    );
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| ApiError::new(400, format!("cannot run {program}: {e}")))?;
    let limit = Duration::from_millis(req.timeout_ms.unwrap_or(30_000));
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(ExecResult {
            exit_code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed_ms: start.elapsed().as_millis() as u64,
            timed_out: false,
        }),
        Ok(Err(e)) => Err(ApiError::new(500, format!("waiting for {program}: {e}"))),
        Err(_) => Ok(ExecResult {
            exit_code: None,
            stdout: String::new(),
            stderr: format!("killed after {} ms", limit.as_millis()),
            elapsed_ms: start.elapsed().as_millis() as u64,
            timed_out: true,
        }),
    }
}

/// A pod as the API shows it.
pub fn pod_view(pod: &PodRuntime) -> Pod {
    let status = pod.process.as_ref().map(|p| p.status());
    let netns_alive = sys::netns_alive(&pod.netns);
    let phase = match (&status, netns_alive) {
        (_, false) => PodPhase::NetworkMissing,
        (Some(s), _) => s.phase,
        (None, _) => PodPhase::Pending,
    };
    Pod {
        namespace: pod.spec.namespace.clone(),
        name: pod.spec.name.clone(),
        labels: pod.spec.labels.clone(),
        ip: pod.ip,
        node_interface: pod.node_if.clone(),
        netns: pod.netns.clone(),
        netns_alive,
        identity: pod.identity,
        endpoint_id: pod.ep_id,
        image: pod.spec.container.image.clone(),
        workload: workload_name(&pod.spec.container.workload).into(),
        owner: pod.spec.owner.clone(),
        phase,
        ready: status.as_ref().is_some_and(|s| s.phase == Phase::Running),
        restarts: status.as_ref().map_or(0, |s| u64::from(s.restarts)),
        pid: status.as_ref().and_then(|s| s.pid),
        last_exit: status.as_ref().and_then(|s| s.last_exit.clone()),
        started_at: status.as_ref().and_then(|s| s.started_at),
        created: pod.created,
        log_file: pod.log_file.clone(),
        source: pod.spec.source.clone(),
    }
}

fn workload_name(w: &Workload) -> &'static str {
    match w {
        Workload::Deathstar { .. } => "deathstar",
        Workload::Ship => "ship",
        Workload::FtpStore { .. } => "ftp-store",
        Workload::Echo { .. } => "echo",
        Workload::Dns => "dns",
        Workload::Inventory { .. } => "inventory",
        Workload::Agnhost { .. } => "agnhost",
    }
}

/// A service as the API shows it.
pub fn service_view(svc: &ServiceRuntime) -> Service {
    Service {
        namespace: svc.spec.namespace.clone(),
        name: svc.spec.name.clone(),
        service_type: match svc.spec.service_type {
            ServiceType::ClusterIP => model::ServiceType::ClusterIP,
            ServiceType::NodePort => model::ServiceType::NodePort,
        },
        cluster_ip: svc.cluster_ip,
        selector: svc.spec.selector.clone(),
        labels: svc.spec.labels.clone(),
        ports: svc
            .spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| ServicePort {
                name: p.name.clone(),
                port: p.port,
                protocol: p.protocol.name().into(),
                target_port: match &p.target_port {
                    TargetPort::Number(n) => PortRef::Number(*n),
                    TargetPort::Name(s) => PortRef::Name(s.clone()),
                },
                node_port: p.node_port,
                endpoints: svc
                    .backends
                    .get(&i)
                    .map(|b| b.iter().map(|(ip, port)| format!("{ip}:{port}")).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        dns: format!(
            "{}.{}.svc.{}",
            svc.spec.name,
            svc.spec.namespace,
            cluster::CLUSTER_DOMAIN
        ),
    }
}

impl web::Backend for LabBackend {
    fn status(&self) -> Status {
        let lab = self.lab();
        Status {
            instance: lab.paths.instance.clone(),
            pid: std::process::id(),
            web: lab
                .web_addr
                .lock()
                .expect("web")
                .map(|a| format!("http://{a}/")),
            pods: lab.pods.read().expect("pods").len(),
            services: lab.services.read().expect("services").len(),
            node_netns: lab.node_ns.clone(),
            pod_range: lab.topology.pod_range.0.to_string(),
            started: lab.started,
            policies: crate::policies::count(lab),
        }
    }

    fn instance(&self) -> String {
        self.lab().paths.instance.clone()
    }

    fn pods(&self) -> Vec<Pod> {
        let pods = self.lab().pods.read().expect("pods");
        pods.values().map(pod_view).collect()
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        let pods = self.lab().pods.read().expect("pods");
        pods.get(&(namespace.into(), name.into())).map(pod_view)
    }

    fn hosts(&self) -> Vec<Host> {
        let hosts = self.lab().hosts.read().expect("hosts");
        hosts
            .iter()
            .map(|(name, (_, ip))| Host {
                namespace: "world".into(),
                name: name.clone(),
                ip: *ip,
            })
            .collect()
    }

    fn pod_context(&self, namespace: &str, name: &str) -> Option<PodContext> {
        self.lab().context_of(&format!("{namespace}/{name}"))
    }

    fn services(&self) -> Vec<Service> {
        let services = self.lab().services.read().expect("services");
        services.values().map(service_view).collect()
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        let engine = self.lab().engine.lock().expect("engine");
        engine
            .endpoints()
            .map(|e| Endpoint {
                ep_id: e.ep_id,
                namespace: e.namespace.clone(),
                pod: e.pod.clone(),
                ip: e.ip,
                ifname: e.ifname.clone(),
                ifindex: e.ifindex,
                identity: e.identity,
                labels: e.labels.clone(),
                ingress_enforced: e.flags & enforcer_common::EP_INGRESS_ENFORCED != 0,
                egress_enforced: e.flags & enforcer_common::EP_EGRESS_ENFORCED != 0,
            })
            .collect()
    }

    fn identities(&self) -> Vec<Identity> {
        let engine = self.lab().engine.lock().expect("engine");
        engine.identities().all().cloned().collect()
    }

    fn conntrack(&self) -> Vec<ConntrackEntry> {
        let engine = self.lab().engine.lock().expect("engine");
        engine
            .datapath_ref()
            .conntrack()
            .iter()
            .map(|c| ConntrackEntry {
                source: c.source.to_string(),
                destination: c.destination.to_string(),
                protocol: c.protocol,
                direction: c.direction.name().into(),
                packets: c.entry.packets,
                bytes: c.entry.bytes,
                flags: c.entry.flags,
            })
            .collect()
    }

    fn policies(&self) -> Vec<PolicyEntry> {
        crate::policies::list(self.lab())
    }

    fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<ApplyResult, ApiError>> {
        self.blocking(move |lab| crate::policies::apply(lab, &req))
    }

    fn delete_policies(&self, req: DeleteRequest) -> BoxFut<'_, Result<DeleteResult, ApiError>> {
        self.blocking(move |lab| crate::policies::delete(lab, &req))
    }

    fn set_policy_audit(
        &self,
        namespace: &str,
        name: &str,
        audit: bool,
    ) -> BoxFut<'_, Result<PolicyAudit, ApiError>> {
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        self.blocking(move |lab| crate::policies::set_audit(lab, &ns, &name, audit))
    }

    fn audit_mode(&self) -> AuditMode {
        AuditMode {
            audit_mode: crate::policies::audit_all(self.lab()),
        }
    }

    fn set_audit_mode(&self, on: bool) -> BoxFut<'_, Result<AuditMode, ApiError>> {
        self.blocking(move |lab| crate::policies::set_audit_all(lab, on))
    }

    fn limits(&self) -> Vec<LimitStatus> {
        crate::policies::limit_status(self.lab())
    }

    fn prefilter(&self) -> PrefilterState {
        crate::prefilter::list(self.lab())
    }

    fn change_prefilter(
        &self,
        change: PrefilterChange,
    ) -> BoxFut<'_, Result<PrefilterState, ApiError>> {
        self.blocking(move |lab| crate::prefilter::change(lab, &change))
    }

    fn audit(&self, req: AuditRequest) -> BoxFut<'_, Result<Vec<Finding>, ApiError>> {
        self.blocking(move |lab| crate::audit::live(lab, &req))
    }

    fn matrix(&self, req: model::MatrixRequest) -> BoxFut<'_, Result<model::Matrix, ApiError>> {
        let lab = self.0.clone();
        Box::pin(async move { crate::matrix::matrix(&lab, &req).await })
    }

    fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Flow>> {
        let all = self.lab().recorder.recent();
        let mut out: Vec<Arc<Flow>> = all.into_iter().filter(|f| filter.matches(f)).collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Flow>> {
        self.lab().recorder.subscribe()
    }

    fn metrics(&self) -> String {
        crate::metrics::render(self.lab())
    }

    fn ship(&self, pod: &str, req: ShipRequest) -> BoxFut<'_, Result<ShipResult, ApiError>> {
        let lab = self.0.clone();
        let pod = pod.to_owned();
        Box::pin(async move {
            let json =
                serde_json::to_string(&req).map_err(|e| ApiError::new(500, e.to_string()))?;
            let req = ExecRequest {
                argv: vec!["lab".into(), "ship-move".into(), "--json".into(), json],
                timeout_ms: Some(60_000),
            };
            let res = exec_captured(&lab, &pod, &req).await?;
            serde_json::from_str(res.stdout.trim()).map_err(|e| {
                ApiError::new(
                    500,
                    format!("the ship client failed: {e}: {}{}", res.stdout, res.stderr),
                )
            })
        })
    }

    fn exec(&self, pod: &str, req: ExecRequest) -> BoxFut<'_, Result<ExecResult, ApiError>> {
        let lab = self.0.clone();
        let pod = pod.to_owned();
        Box::pin(async move { exec_captured(&lab, &pod, &req).await })
    }

    fn set_proxy(&self, running: bool) -> BoxFut<'_, Result<ProxyState, ApiError>> {
        let lab = self.0.clone();
        Box::pin(async move {
            if running {
                lab.start_proxy()
                    .map_err(|e| ApiError::new(500, format!("{e:#}")))?;
                Ok(ProxyState {
                    proxy: ProxyRun::Running,
                })
            } else {
                lab.stop_proxy();
                Ok(ProxyState {
                    proxy: ProxyRun::Stopped,
                })
            }
        })
    }

    fn shutdown(&self) {
        let _ = self.lab().shutdown.send(true);
    }

    fn bench_plot(&self, run: &str, file: &str) -> BoxFut<'_, Result<String, ApiError>> {
        let (run, file) = (run.to_owned(), file.to_owned());
        self.blocking(move |lab| crate::bench::web::plot_svg(lab, &run, &file).map_err(Into::into))
    }
}
