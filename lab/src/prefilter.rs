//! The XDP prefilter on the node's external interface, like Cilium's: a deny list of source
//! CIDRs dropped before the kernel's stack. Plus, for the incident lesson only, the story's
//! mistake — a switch that makes a NodePort skip policy — which the lab keeps clearly marked as
//! unsafe. (Cilium's real prefilter has no such switch; the story's feature is not real.)

use serde_json::{Value, json};
use web::api::ApiError;

use crate::control::Lab;

pub fn list(lab: &Lab) -> Value {
    let engine = lab.engine.lock().expect("engine");
    let dp = engine.datapath_ref();
    let mut deny: Vec<String> = dp
        .prefilter()
        .iter()
        .map(|(a, l)| format!("{a}/{l}"))
        .collect();
    deny.sort();
    let mut bypass = dp.bypassed();
    bypass.sort();
    json!({
        "interface": "ext0",
        "deny": deny,
        "bypass_node_ports": bypass,
        "warning": (!bypass.is_empty()).then_some(
            "UNSAFE: connections to these NodePorts skip every network policy (the 72-hour exposure)"
        ),
    })
}

fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), ApiError> {
    enforcer::policy::normalize::parse_cidr(s).ok_or_else(|| {
        ApiError::new(400, format!("{s:?} is not an IPv4 CIDR; write it like 198.51.100.0/24 (a bare address means /32)"))
    })
}

/// `{"action": "update"|"delete", "cidrs": [..]}` or
/// `{"action": "bypass", "node_port": N, "enabled": bool, "unsafe": true}`.
pub fn change(lab: &Lab, body: &Value) -> Result<Value, ApiError> {
    let action = body["action"].as_str().unwrap_or_default();
    match action {
        "update" | "delete" => {
            let cidrs: Vec<(std::net::Ipv4Addr, u8)> = body["cidrs"]
                .as_array()
                .ok_or_else(|| ApiError::new(400, "give the CIDRs: --cidr 198.51.100.0/24"))?
                .iter()
                .map(|c| parse_cidr(c.as_str().unwrap_or_default()))
                .collect::<Result<_, _>>()?;
            let mut engine = lab.engine.lock().expect("engine");
            let dp = engine.datapath();
            for (addr, len) in &cidrs {
                let res = if action == "update" {
                    dp.prefilter_add(*addr, *len)
                } else {
                    dp.prefilter_remove(*addr, *len)
                };
                res.map_err(|e| ApiError::new(500, e.to_string()))?;
            }
        }
        "bypass" => {
            let port = body["node_port"]
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| ApiError::new(400, "give the NodePort: --node-port 30007"))?
                as u16;
            let enabled = body["enabled"].as_bool().unwrap_or(true);
            if enabled && body["unsafe"].as_bool() != Some(true) {
                return Err(ApiError::new(
                    400,
                    "the bypass makes every connection to this NodePort skip policy; it exists to replay the 72-hour exposure. Confirm with --unsafe",
                ));
            }
            let known = lab
                .services
                .read()
                .expect("services")
                .values()
                .any(|s| s.spec.ports.iter().any(|p| p.node_port == Some(port)));
            if enabled && !known {
                return Err(ApiError::new(
                    404,
                    format!("no service has NodePort {port}; see `lab get svc`"),
                ));
            }
            let mut engine = lab.engine.lock().expect("engine");
            engine
                .datapath()
                .set_bypass(port, enabled)
                .map_err(|e| ApiError::new(500, e.to_string()))?;
        }
        other => {
            return Err(ApiError::new(
                400,
                format!("unknown prefilter action {other:?}: update, delete or bypass"),
            ));
        }
    }
    Ok(list(lab))
}
