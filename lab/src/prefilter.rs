//! The XDP prefilter on the node's external interface, like Cilium's: a deny list of source
//! CIDRs dropped before the kernel's stack. Plus, for the incident lesson only, the story's
//! mistake — a switch that makes a NodePort skip policy — which the lab keeps clearly marked as
//! unsafe. (Cilium's real prefilter has no such switch; the story's feature is not real.)

use model::{PrefilterChange, PrefilterState};
use web::api::ApiError;

use crate::control::Lab;

pub fn list(lab: &Lab) -> PrefilterState {
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
    PrefilterState {
        interface: "ext0".into(),
        deny,
        warning: (!bypass.is_empty()).then(|| {
            "UNSAFE: connections to these NodePorts skip every network policy (the 72-hour exposure)"
                .into()
        }),
        bypass_node_ports: bypass,
    }
}

fn parse_cidr(s: &str) -> Result<(std::net::Ipv4Addr, u8), ApiError> {
    enforcer::policy::normalize::parse_cidr(s).ok_or_else(|| {
        ApiError::new(400, format!("{s:?} is not an IPv4 CIDR; write it like 198.51.100.0/24 (a bare address means /32)"))
    })
}

/// Adds or removes denied CIDRs, or turns a NodePort's bypass on or off.
pub fn change(lab: &Lab, change: &PrefilterChange) -> Result<PrefilterState, ApiError> {
    match change {
        PrefilterChange::Update { cidrs } | PrefilterChange::Delete { cidrs } => {
            if cidrs.is_empty() {
                return Err(ApiError::new(400, "give the CIDRs: --cidr 198.51.100.0/24"));
            }
            let cidrs: Vec<(std::net::Ipv4Addr, u8)> = cidrs
                .iter()
                .map(|c| parse_cidr(c))
                .collect::<Result<_, _>>()?;
            let add = matches!(change, PrefilterChange::Update { .. });
            let mut engine = lab.engine.lock().expect("engine");
            let dp = engine.datapath();
            for (addr, len) in &cidrs {
                let res = if add {
                    dp.prefilter_add(*addr, *len)
                } else {
                    dp.prefilter_remove(*addr, *len)
                };
                res.map_err(|e| ApiError::new(500, e.to_string()))?;
            }
        }
        PrefilterChange::Bypass {
            node_port,
            enabled,
            unsafe_ok,
        } => {
            let port = *node_port;
            if port == 0 {
                return Err(ApiError::new(400, "give the NodePort: --node-port 30007"));
            }
            if *enabled && !unsafe_ok {
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
            if *enabled && !known {
                return Err(ApiError::new(
                    404,
                    format!("no service has NodePort {port}; see `lab get svc`"),
                ));
            }
            let mut engine = lab.engine.lock().expect("engine");
            engine
                .datapath()
                .set_bypass(port, *enabled)
                .map_err(|e| ApiError::new(500, e.to_string()))?;
        }
    }
    Ok(list(lab))
}
