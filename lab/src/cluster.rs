//! The cluster as plain data: namespaces, pods (with the workload each runs) and services, as
//! read from Kubernetes manifests and before anything exists in the kernel. `build` turns
//! manifests into this; `lab up` makes it real (see `control`).
//!
//! The port, protocol, service-type and restart-policy types here are also what `manifest`
//! decodes into, so the two layers share one definition of each.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Addresses of the simulated node. Pods get /32s from the node's pod range (`POD_CIDR`
/// unless the cluster needs more room, see [`PodRange`]), services virtual IPs from
/// `SERVICE_CIDR` (Kubernetes' defaults).
pub const POD_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 244, 0, 0), 24);
/// The widest range chosen without being asked (65,533 pods, far beyond what a VM runs).
pub const WIDEST_AUTOMATIC_POD_PREFIX: u8 = 16;
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 96, 0, 0), 12);
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Outside the cluster: the node's external interface `ext0` faces a small internet (the
/// `world` namespace routes between its hosts), with an attacker on a public address and a
/// monitoring host in the private range 10.0.0.0/8 the incident story uses.
pub const NODE_EXT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const WORLD_UPLINK_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
pub const ATTACKER_GW: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const MONITOR_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 5);
pub const MONITOR_GW: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
/// Private ranges: traffic to NodePorts from elsewhere counts as coming from the internet.
pub const INTERNAL_RANGES: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];
/// The service account every namespace has, and a pod uses unless it names another.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

fn default_service_account() -> String {
    DEFAULT_SERVICE_ACCOUNT.to_owned()
}

/// Kubernetes' NodePort range.
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// A built-in workload: what a container image stands for in the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Workload {
    /// The Deathstar API (Cilium's `starwars` image). `log_stores` name services (NAME:PORT)
    /// the Deathstar ships its API logs to.
    Deathstar { log_stores: Vec<LogStoreRef> },
    /// A ship: a client pod that idles until `lab exec` or `lab ship` uses it.
    Ship,
    /// An FTP log store.
    FtpStore { secure: bool },
    /// A small HTTP server answering every request.
    Echo { port: u16, body: String },
    /// The cluster DNS server.
    Dns,
    /// The fake customer database of the NodePort incident lesson.
    Inventory { port: u16 },
    /// Kubernetes' `agnhost` test servers (the network policy conformance pods).
    Agnhost {
        servers: Vec<demo_services::agnhost::Server>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStoreRef {
    /// Service name (in the pod's namespace) and port, e.g. `ftp-secure:21`.
    pub service: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The images the lab knows, for error messages.
pub const KNOWN_IMAGES: &[&str] = &[
    "lab/deathstar (also quay.io/cilium/starwars, docker.io/cilium/starwars)",
    "lab/ship (also quay.io/cilium/json-mock, docker.io/tgraf/netperf)",
    "lab/ftp-store (env FTP_MODE=secure|vulnerable)",
    "lab/echo (env PORT, BODY)",
    "lab/inventory (env PORT)",
    "registry.k8s.io/e2e-test-images/agnhost (serve-hostname, netexec, porter, pause; several per pod)",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub workload: Workload,
    /// Container ports as declared (informational, and for named target ports).
    pub ports: Vec<(Option<String>, u16, Protocol)>,
}

/// L4 protocol of a container or service port (Kubernetes default: TCP).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl PodSpec {
    /// The container ports declared with a name, for named ports in policies.
    pub fn named_ports(&self) -> Vec<enforcer::policy::resolve::NamedPort> {
        self.container
            .ports
            .iter()
            .filter_map(|(name, port, proto)| {
                Some(enforcer::policy::resolve::NamedPort {
                    name: name.clone()?,
                    proto: proto.number(),
                    port: *port,
                })
            })
            .collect()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The Deployment that owns the pod, if any.
    pub owner: Option<String>,
    /// `serviceAccountName`; Cilium labels the pod's identity with it.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    pub container: ContainerSpec,
    pub restart_policy: RestartPolicy,
    /// Where it came from (file:line), for messages.
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Required when the service has more than one port.
    pub name: Option<String>,
    pub port: u16,
    /// `port` when not written.
    pub target_port: TargetPort,
    pub protocol: Protocol,
    /// Only for `NodePort` services, in [`NODE_PORT_RANGE`]; `None` means "pick one".
    pub node_port: Option<u16>,
}

/// A service's target: a port number, or the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub service_type: ServiceType,
    /// Requested `spec.clusterIP`, if any.
    pub cluster_ip: Option<Ipv4Addr>,
    pub source: String,
}

impl ServiceSpec {
    pub fn selects(&self, pod: &PodSpec) -> bool {
        pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }
}

/// The whole desired cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<PodSpec>,
    pub services: Vec<ServiceSpec>,
    /// The node's pod range, sized to the pods (a record from before it existed had /24).
    #[serde(default)]
    pub pod_range: PodRange,
}

/// The node's pod address range, like the per-node CIDR Cilium's cluster-pool IPAM hands out:
/// the node takes the first address, pods the following ones in manifest order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PodRange(pub Ipv4Net);

impl From<PodRange> for String {
    fn from(r: PodRange) -> Self {
        r.0.to_string()
    }
}

impl TryFrom<String> for PodRange {
    type Error = ipnet::AddrParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(Self)
    }
}

impl Default for PodRange {
    fn default() -> Self {
        Self(net(POD_CIDR))
    }
}

impl PodRange {
    /// The default range (10.244.0.0/24, so the Star Wars addresses never change) when the pods
    /// fit, else the narrowest wider range from 10.244.0.0 that holds them, up to /16.
    pub fn sized_for(pods: usize) -> Result<Self, String> {
        (WIDEST_AUTOMATIC_POD_PREFIX..=POD_CIDR.1)
            .rev()
            .map(|len| Self(net((POD_CIDR.0, len))))
            .find(|r| r.capacity() >= pods)
            .ok_or_else(|| {
                format!(
                    "{pods} pods do not fit in the widest pod range the lab picks itself ({}/{WIDEST_AUTOMATIC_POD_PREFIX}, {} pods); give a wider one with `lab up --pod-cidr 10.128.0.0/12`",
                    POD_CIDR.0,
                    Self(net((POD_CIDR.0, WIDEST_AUTOMATIC_POD_PREFIX))).capacity()
                )
            })
    }

    /// A range the user asked for with `--pod-cidr`: private, clear of the service range and of
    /// the simulated outside world, and large enough for the pods.
    pub fn requested(text: &str, pods: usize) -> Result<Self, String> {
        let range: Ipv4Net = text.parse().map_err(|_| {
            format!("--pod-cidr {text:?} is not an IPv4 prefix; write it like 10.244.0.0/22")
        })?;
        if range.network() != range.addr() {
            return Err(format!(
                "--pod-cidr {range} has host bits set; the range starting there is {}",
                range.trunc()
            ));
        }
        if !INTERNAL_RANGES.iter().any(|r| net(*r).contains(&range)) {
            return Err(format!(
                "--pod-cidr {range} is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16); pods use private addresses, as in a real cluster"
            ));
        }
        let taken = [
            (net(SERVICE_CIDR), "the service range"),
            (net((MONITOR_GW, 16)), "the monitoring host's network"),
        ];
        for (other, what) in taken {
            if other.contains(&range.network()) || range.contains(&other.network()) {
                return Err(format!(
                    "--pod-cidr {range} overlaps {what} {other}; choose a range outside it, e.g. 10.244.0.0/22"
                ));
            }
        }
        let r = Self(range);
        if r.capacity() < pods {
            return Err(format!(
                "--pod-cidr {range} has room for {} pods, the manifests have {pods}; {}",
                r.capacity(),
                match Self::sized_for(pods) {
                    Ok(fit) => format!("{} would fit them", fit.0),
                    Err(_) => "use a wider prefix".to_owned(),
                }
            ));
        }
        Ok(r)
    }

    /// How many pods fit: every address but the network, the node's and the broadcast.
    pub fn capacity(&self) -> usize {
        (1usize << (32 - self.0.prefix_len())).saturating_sub(3)
    }

    /// The node's own address in the range.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0.network()) + 1)
    }

    /// The address of the `index`-th pod (manifest order), if the range has room for it.
    pub fn pod_ip(&self, index: usize) -> Option<Ipv4Addr> {
        (index < self.capacity())
            .then(|| Ipv4Addr::from(u32::from(self.0.network()) + 2 + index as u32))
    }
}

impl Topology {
    /// Adds the pieces every cluster has: the `default` and `kube-system` namespaces and the
    /// cluster DNS (a CoreDNS-like pod labelled `k8s-app=kube-dns` and the `kube-dns` service at
    /// 10.96.0.10), so policies written for real clusters that allow DNS work unchanged.
    pub fn with_system_parts(mut self) -> Self {
        for ns in ["default", "kube-system"] {
            self.namespaces.entry(ns.into()).or_default();
        }
        let labels: BTreeMap<String, String> =
            [("k8s-app".to_owned(), "kube-dns".to_owned())].into();
        if !self
            .pods
            .iter()
            .any(|p| p.namespace == "kube-system" && p.labels == labels)
        {
            self.pods.push(PodSpec {
                namespace: "kube-system".into(),
                name: format!("coredns-{}", template_hash("coredns")),
                labels: labels.clone(),
                owner: Some("coredns".into()),
                // As kubeadm deploys CoreDNS.
                service_account: "coredns".into(),
                container: ContainerSpec {
                    name: "coredns".into(),
                    image: "lab/dns".into(),
                    workload: Workload::Dns,
                    ports: vec![
                        (Some("dns".into()), 53, Protocol::Udp),
                        (Some("dns-tcp".into()), 53, Protocol::Tcp),
                    ],
                },
                restart_policy: RestartPolicy::Always,
                source: "built-in".into(),
            });
            self.services.push(ServiceSpec {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
                labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
                selector: labels,
                ports: [Protocol::Udp, Protocol::Tcp]
                    .into_iter()
                    .map(|protocol| ServicePort {
                        name: Some(format!("dns-{}", protocol.name().to_lowercase())),
                        port: 53,
                        target_port: TargetPort::Number(53),
                        protocol,
                        node_port: None,
                    })
                    .collect(),
                service_type: ServiceType::ClusterIP,
                cluster_ip: Some(DNS_SERVICE_IP),
                source: "built-in".into(),
            });
        }
        self
    }

    /// Checks what only makes sense for the whole cluster: unique names, known namespaces,
    /// service ports that resolve. Returns every problem found.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut seen = BTreeSet::new();
        for p in &self.pods {
            let twice = duplicate(&mut seen, "pod", &p.source, &p.namespace, &p.name);
            errors.extend(twice);
        }
        let mut seen = BTreeSet::new();
        let mut ips = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        for s in &self.services {
            let twice = duplicate(&mut seen, "service", &s.source, &s.namespace, &s.name);
            errors.extend(twice);
            if let Some(ip) = s.cluster_ip {
                if !ips.insert(ip) {
                    errors.push(format!(
                        "{}: clusterIP {ip} is used by two services",
                        s.source
                    ));
                }
                if !net(SERVICE_CIDR).contains(&ip) {
                    errors.push(format!(
                        "{}: clusterIP {ip} is outside the service range {}/{}",
                        s.source, SERVICE_CIDR.0, SERVICE_CIDR.1
                    ));
                }
            }
            for port in &s.ports {
                if let Some(np) = port.node_port
                    && !node_ports.insert(np)
                {
                    errors.push(format!("{}: nodePort {np} is used twice", s.source));
                }
            }
        }
        for p in &self.pods {
            if !self.namespaces.contains_key(&p.namespace) {
                errors.push(format!(
                    "{}: namespace {:?} does not exist; add a Namespace object or use one of: {}",
                    p.source,
                    p.namespace,
                    self.namespaces
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        errors
    }
}

/// An error when `namespace/name` was already seen among the `kind` objects.
fn duplicate<'a>(
    seen: &mut BTreeSet<(&'a str, &'a str)>,
    kind: &str,
    source: &str,
    namespace: &'a str,
    name: &'a str,
) -> Option<String> {
    (!seen.insert((namespace, name)))
        .then(|| format!("{source}: a {kind} named {namespace}/{name} is defined twice"))
}

/// One of the prefixes above as a network, e.g. `net(POD_CIDR).contains(&ip)`.
pub const fn net((addr, len): (Ipv4Addr, u8)) -> Ipv4Net {
    Ipv4Net::new_assert(addr, len)
}

/// A stable 10-character hash like Kubernetes' pod-template-hash (FNV-1a, base36-ish alphabet).
pub fn template_hash(input: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // Kubernetes' "safe" alphabet: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A random 5-character pod suffix, as a ReplicaSet gives its pods.
pub fn pod_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut buf = [0u8; 5];
    getrandom(&mut buf);
    buf.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom")
        && f.read_exact(buf).is_ok()
    {
        return;
    }
    // Fallback: time-based, good enough for name suffixes.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (t >> (i * 8)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(net(SERVICE_CIDR).contains(&DNS_SERVICE_IP));
        assert!(net(SERVICE_CIDR).contains(&Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!net(SERVICE_CIDR).contains(&Ipv4Addr::new(10, 112, 0, 0)));
        let internal = |ip| INTERNAL_RANGES.iter().any(|r| net(*r).contains(&ip));
        assert!(internal(MONITOR_IP) && !internal(ATTACKER_IP) && !internal(NODE_EXT_IP));
    }

    #[test]
    fn pod_range_is_the_default_until_the_pods_need_more() {
        let default = PodRange::sized_for(8).unwrap();
        assert_eq!(default, PodRange::default());
        assert_eq!(default.node_ip(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(default.pod_ip(0), Some(Ipv4Addr::new(10, 244, 0, 2)));
        assert_eq!(default.capacity(), 253);
        assert_eq!(PodRange::sized_for(253).unwrap(), default);
        let wider = PodRange::sized_for(254).unwrap();
        assert_eq!(wider.0.to_string(), "10.244.0.0/23");
        assert_eq!(wider.pod_ip(253), Some(Ipv4Addr::new(10, 244, 0, 255)));
        assert_eq!(wider.pod_ip(wider.capacity()), None);
        assert_eq!(
            PodRange::sized_for(1000).unwrap().0.to_string(),
            "10.244.0.0/22"
        );
        assert!(
            PodRange::sized_for(70_000)
                .unwrap_err()
                .contains("--pod-cidr")
        );
    }

    #[test]
    fn a_requested_pod_range_is_checked() {
        assert_eq!(
            PodRange::requested("10.128.0.0/20", 1000)
                .unwrap()
                .node_ip(),
            Ipv4Addr::new(10, 128, 0, 1)
        );
        for (text, says) in [
            ("10.244.0.0", "not an IPv4 prefix"),
            ("10.244.0.5/24", "host bits"),
            ("203.0.113.0/24", "private range"),
            ("10.96.0.0/16", "service range"),
            ("10.0.0.0/8", "service range"),
            ("10.20.0.0/24", "monitoring host"),
            ("10.244.0.0/26", "room for 61 pods"),
        ] {
            let err = PodRange::requested(text, 100).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn template_hash_is_stable_and_k8s_shaped() {
        let h = template_hash("default/deathstar");
        assert_eq!(h.len(), 10);
        assert_eq!(h, template_hash("default/deathstar"));
        assert_ne!(h, template_hash("default/other"));
        assert!(pod_suffix().chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
