//! The lab as the web crate's [`Backend`]: what the control API and the page can see and do.

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use web::api::{
    ApiError, ApplyRequest, BoxFut, DeleteRequest, ExecRequest, ExecResult, FlowFilter,
};

use crate::control::{Lab, service_json};

pub struct LabBackend(pub Arc<Lab>);

impl LabBackend {
    fn lab(&self) -> &Lab {
        &self.0
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

impl web::Backend for LabBackend {
    fn status(&self) -> Value {
        let lab = self.lab();
        let pods = lab.pods.read().expect("pods");
        json!({
            "instance": lab.paths.instance,
            "pid": std::process::id(),
            "web": lab.web_addr.lock().expect("web").map(|a| format!("http://{a}/")),
            "pods": pods.len(),
            "services": lab.services.read().expect("services").len(),
            "node_netns": lab.node_ns,
            "started": crate::control::rfc3339(lab.started),
            "policies": crate::policies::count(lab),
        })
    }

    fn pods(&self) -> Value {
        let lab = self.lab();
        let pods = lab.pods.read().expect("pods");
        Value::Array(pods.values().map(|p| lab.pod_json(p)).collect())
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let lab = self.lab();
        let pods = lab.pods.read().expect("pods");
        pods.get(&(namespace.into(), name.into()))
            .map(|p| lab.pod_json(p))
    }

    fn pod_context(&self, namespace: &str, name: &str) -> Option<Value> {
        let ctx = self.lab().context_of(&format!("{namespace}/{name}"))?;
        serde_json::to_value(&ctx).ok()
    }

    fn services(&self) -> Value {
        let services = self.lab().services.read().expect("services");
        Value::Array(services.values().map(service_json).collect())
    }

    fn endpoints(&self) -> Value {
        let engine = self.lab().engine.lock().expect("engine");
        serde_json::to_value(engine.endpoints().collect::<Vec<_>>()).unwrap_or_default()
    }

    fn identities(&self) -> Value {
        let engine = self.lab().engine.lock().expect("engine");
        serde_json::to_value(engine.identities().all().collect::<Vec<_>>()).unwrap_or_default()
    }

    fn policies(&self) -> Value {
        crate::policies::list(self.lab())
    }

    fn apply_policies(&self, req: ApplyRequest) -> BoxFut<'_, Result<Value, ApiError>> {
        let lab = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::policies::apply(&lab, &req))
                .await
                .map_err(|e| ApiError::new(500, e.to_string()))?
        })
    }

    fn delete_policies(&self, req: DeleteRequest) -> BoxFut<'_, Result<Value, ApiError>> {
        let lab = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::policies::delete(&lab, &req))
                .await
                .map_err(|e| ApiError::new(500, e.to_string()))?
        })
    }

    fn set_policy_audit(
        &self,
        namespace: &str,
        name: &str,
        audit: bool,
    ) -> BoxFut<'_, Result<Value, ApiError>> {
        let lab = self.0.clone();
        let (ns, name) = (namespace.to_owned(), name.to_owned());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || crate::policies::set_audit(&lab, &ns, &name, audit))
                .await
                .map_err(|e| ApiError::new(500, e.to_string()))?
        })
    }

    fn flows(&self, filter: &FlowFilter) -> Vec<Arc<Value>> {
        let all = self.lab().flows.recent();
        let mut out: Vec<Arc<Value>> = all.into_iter().filter(|f| filter.matches(f)).collect();
        if let Some(limit) = filter.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        out
    }

    fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<Arc<Value>> {
        self.lab().flows.subscribe()
    }

    fn metrics(&self) -> String {
        crate::metrics::render(self.lab())
    }

    fn ship(&self, pod: &str, body: Value) -> BoxFut<'_, Result<Value, ApiError>> {
        let lab = self.0.clone();
        let pod = pod.to_owned();
        Box::pin(async move {
            let req = ExecRequest {
                argv: vec![
                    "lab".into(),
                    "ship-move".into(),
                    "--json".into(),
                    body.to_string(),
                ],
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

    fn extension(&self, path: &str, body: Option<Value>) -> BoxFut<'_, Result<Value, ApiError>> {
        let lab = self.0.clone();
        let path = path.to_owned();
        Box::pin(async move {
            match (path.as_str(), body) {
                ("hosts", None) => {
                    let hosts = lab.hosts.read().expect("hosts");
                    Ok(Value::Array(
                        hosts
                            .iter()
                            .map(|(name, (_, ip))| json!({"namespace": "world", "name": name, "ip": ip.to_string()}))
                            .collect(),
                    ))
                }
                ("audit", body) => crate::audit::live(&lab, body.as_ref()),
                ("limits", None) => Ok(crate::policies::limit_status(&lab)),
                ("prefilter", None) => Ok(crate::prefilter::list(&lab)),
                ("prefilter", Some(body)) => crate::prefilter::change(&lab, &body),
                ("audit-mode", None) => Ok(json!({"audit_mode": crate::policies::audit_all(&lab)})),
                ("audit-mode", Some(body)) => {
                    let on = body["audit_mode"].as_bool().ok_or_else(|| {
                        ApiError::new(400, "expected {\"audit_mode\": true|false}")
                    })?;
                    crate::policies::set_audit_all(&lab, on)
                }
                ("proxy/stop", Some(_)) => {
                    lab.stop_proxy();
                    Ok(json!({"proxy": "stopped"}))
                }
                ("proxy/start", Some(_)) => {
                    lab.start_proxy()
                        .map_err(|e| ApiError::new(500, format!("{e:#}")))?;
                    Ok(json!({"proxy": "running"}))
                }
                ("shutdown", Some(_)) => {
                    let _ = lab.shutdown.send(true);
                    Ok(json!({"shutting_down": true}))
                }
                ("conntrack", None) => {
                    let engine = lab.engine.lock().expect("engine");
                    let entries: Vec<Value> = engine
                        .datapath_ref()
                        .conntrack()
                        .iter()
                        .map(|(k, v)| {
                            json!({
                                "source": format!("{}:{}", std::net::Ipv4Addr::from(u32::from_be(k.saddr)), u16::from_be(k.sport)),
                                "destination": format!("{}:{}", std::net::Ipv4Addr::from(u32::from_be(k.daddr)), u16::from_be(k.dport)),
                                "protocol": k.proto,
                                "direction": if k.direction == enforcer_common::DIR_INGRESS { "ingress" } else { "egress" },
                                "packets": v.packets,
                                "bytes": v.bytes,
                                "flags": v.flags,
                            })
                        })
                        .collect();
                    Ok(Value::Array(entries))
                }
                (p, body) if p == "bench" || p.starts_with("bench/") => {
                    crate::bench::web::route(lab, &p["bench".len()..], body).await
                }
                (p, _) => Err(ApiError::not_found(format!("no API route /api/x/{p}"))),
            }
        })
    }
}
