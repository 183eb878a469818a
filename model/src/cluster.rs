//! The cluster as the control API shows it: the lab's status, pods, the hosts outside the
//! cluster, services, endpoints and identities.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// `GET /api/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub instance: String,
    pub pid: u32,
    /// The web lab's address (`http://127.0.0.1:8080/`), once it listens.
    pub web: Option<String>,
    pub pods: usize,
    pub services: usize,
    pub node_netns: PathBuf,
    /// The node's pod address range, e.g. `10.244.0.0/24`.
    #[serde(default)]
    pub pod_range: String,
    #[serde(with = "rfc3339")]
    pub started: SystemTime,
    pub policies: usize,
}

/// A pod's phase, as `kubectl get pods` shows it; `NetworkMissing` is the lab's own (its
/// network namespace is gone).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum PodPhase {
    Pending,
    Running,
    /// Exited and waiting to be restarted.
    CrashLoopBackOff,
    Succeeded,
    Failed,
    Terminating,
    NetworkMissing,
}

/// `GET /api/pods`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// The node side of the pod's veth.
    pub node_interface: String,
    pub netns: String,
    pub netns_alive: bool,
    pub identity: u32,
    pub endpoint_id: u32,
    pub image: String,
    /// The built-in workload that stands in for the image (`deathstar`, `ship`, `echo`, ...).
    pub workload: String,
    /// The Deployment that owns it.
    pub owner: Option<String>,
    pub phase: PodPhase,
    pub ready: bool,
    pub restarts: u64,
    pub pid: Option<u32>,
    pub last_exit: Option<String>,
    #[serde(with = "rfc3339::option")]
    pub started_at: Option<SystemTime>,
    #[serde(with = "rfc3339")]
    pub created: SystemTime,
    pub log_file: PathBuf,
    /// Where it was declared (`file:line`).
    pub source: String,
}

impl Pod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A host outside the cluster (`world/attacker`, `world/monitor`), `GET /api/hosts`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Host {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
}

/// `GET /api/services`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    pub cluster_ip: Ipv4Addr,
    pub selector: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    /// `name.namespace.svc.cluster.local`.
    pub dns: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub target_port: PortRef,
    pub node_port: Option<u16>,
    /// Ready backends, `ip:port`.
    pub endpoints: Vec<String>,
}

/// A port by number or by the name a container gives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// A pod as the policy engine sees it (Cilium's endpoint), `GET /api/endpoints`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Endpoint {
    pub ep_id: u32,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    pub ifname: String,
    pub ifindex: u32,
    pub identity: u32,
    /// Labels with their source: `k8s:org` → `empire`.
    pub labels: BTreeMap<String, String>,
    pub ingress_enforced: bool,
    pub egress_enforced: bool,
}

/// A security identity, `GET /api/identities`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub id: u32,
    /// Labels with their source: `k8s:org` → `empire`, `reserved:host` → ``.
    pub labels: BTreeMap<String, String>,
    pub kind: IdentityKind,
}

impl Identity {
    /// Labels as Cilium prints them: `k8s:org=empire`, `reserved:host`.
    pub fn label_strings(&self) -> Vec<String> {
        self.labels
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum IdentityKind {
    Reserved,
    Pod,
    Cidr { prefix: Ipv4Addr, len: u8 },
}

/// A connection-tracking entry of the datapath, `GET /api/conntrack`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackEntry {
    /// `ip:port`.
    pub source: String,
    pub destination: String,
    pub protocol: u8,
    /// `ingress` / `egress`.
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
    pub flags: u32,
}

/// Everything needed to enter a pod or an outside host (`lab exec`): paths of its network
/// namespace, cgroup and resolv.conf. `GET /api/pods/{ns}/{name}/context`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodContext {
    pub namespace: String,
    pub pod: String,
    pub netns: PathBuf,
    /// The pod's cgroup directory (cgroup v2).
    pub cgroup: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: String,
}
