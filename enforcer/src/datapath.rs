//! The kernel side as user space sees it: loads the embedded eBPF object, pins its maps and links
//! under a bpffs directory so enforcement survives the `lab` process (fail closed), attaches the
//! programs to pod veths, and reads and writes the maps. Only this module touches BPF maps.
//!
//! On a restart the pinned maps are reused as they are (the policy stays in force) and each
//! pinned link gets the freshly loaded program atomically, so there is no window without
//! enforcement.
//!
//! Byte order is settled here and nowhere else: callers give and get host-order values and
//! plain Rust types ([`MapKey`], [`MapValue`], [`EndpointEntry`], [`Connection`],
//! `Ipv4Addr`); this module encodes them as the `enforcer_common` kernel types, whose
//! addresses and ports are in network order.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io,
    net::{Ipv4Addr, SocketAddrV4},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSockAddr, LinkOrder, Program, ProgramError, SchedClassifier,
        SockOps, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use enforcer_common::{
    CONFIG_FLAGS, CtEntry, CtKey, DIR_EGRESS, DIR_INGRESS, EndpointInfo, IpcacheKey, IpcacheValue,
    LimitKey, LimitValue, METRICS_LEN, PolicyKey, PolicyValue, ServiceKey, ServiceValue,
    VERDICT_ALLOW, VERDICT_DENY, VERDICT_NONE, VERDICT_REDIRECT,
};
use thiserror::Error;

use crate::policy::resolve::{Direction, MapKey, MapValue, Verdict};

pub mod events;
pub use events::{AsyncEventReader, Clock, Event, EventReader};

/// The compiled kernel programs (`enforcer-ebpf`), built by this crate's build script.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

/// Maps pinned (and reused across restarts) under `<dir>/maps/`.
const PINNED_MAPS: [&str; 17] = [
    "ENDPOINTS",
    "IPCACHE",
    "POLICY",
    "CT",
    "EVENTS",
    "METRICS",
    "CONFIG",
    "SERVICES",
    "SOCK_REVNAT",
    "NODEPORT_NAT",
    "NODEPORT_RNAT",
    "PREFILTER",
    "PF_BYPASS",
    "CONN_LIMITS",
    "CONN_COUNTS",
    "CONN_SOCKS",
    "CONN_PENDING",
];

/// The socket-level load-balancing programs, attached to the cgroup of all pods.
const SOCK_PROGRAMS: [&str; 4] = [
    "sock_connect4",
    "sock_sendmsg4",
    "sock_recvmsg4",
    "sock_getpeername4",
];

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(
        "loading the eBPF programs: {0}\n  (needs root, a kernel with BPF and BTF; `lab doctor` checks what is missing)"
    )]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("pinning under {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("attaching to {iface}: {detail}")]
    Attach { iface: String, detail: String },
}

type Result<T> = std::result::Result<T, DatapathError>;

/// The LPM key of an IPv4 prefix; addresses are stored in network byte order.
fn cidr_key(addr: Ipv4Addr, prefix: u8) -> Key<IpcacheKey> {
    Key::new(
        u32::from(prefix),
        IpcacheKey {
            addr: u32::from(addr).to_be(),
        },
    )
}

/// The kernel's key of a policy entry. The ids and the port are in network order: the LPM trie
/// compares keys byte by byte, so the most significant bits must come first.
fn policy_key(k: &MapKey) -> Key<PolicyKey> {
    Key::new(
        k.prefix_len,
        PolicyKey {
            ep_id: k.endpoint.to_be(),
            identity: k.identity.to_be(),
            direction: k.direction.code(),
            proto: k.protocol,
            dport: k.port.to_be(),
        },
    )
}

/// The inverse of [`policy_key`]; `None` for a key user space never writes.
fn map_key(k: &Key<PolicyKey>) -> Option<MapKey> {
    let d = k.data();
    Some(MapKey {
        endpoint: u32::from_be(d.ep_id),
        identity: u32::from_be(d.identity),
        direction: direction_of(d.direction)?,
        protocol: d.proto,
        port: u16::from_be(d.dport),
        prefix_len: k.prefix_len(),
    })
}

fn policy_value(v: &MapValue) -> PolicyValue {
    PolicyValue {
        verdict: verdict_code(v.verdict),
        audit_verdict: verdict_code(v.audit_verdict),
        proxy_port: v.proxy_port,
        rule_ref: v.rule_ref,
        audit_rule_ref: v.audit_rule_ref,
    }
}

fn verdict_code(v: Verdict) -> u8 {
    match v {
        Verdict::None => VERDICT_NONE,
        Verdict::Allow => VERDICT_ALLOW,
        Verdict::Deny => VERDICT_DENY,
        Verdict::Redirect => VERDICT_REDIRECT,
    }
}

fn direction_of(code: u8) -> Option<Direction> {
    match code {
        DIR_INGRESS => Some(Direction::Ingress),
        DIR_EGRESS => Some(Direction::Egress),
        _ => None,
    }
}

/// An entry of the `ENDPOINTS` map (keyed by the ifindex of the pod's node-side veth).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ep_id: u32,
    pub identity: u32,
    pub ip: Ipv4Addr,
    /// `EP_*` flags: which directions are in default deny.
    pub flags: u32,
}

/// A tracked connection: the tuple of the packet that opened it, the direction in which the
/// endpoint saw it, and the tracking entry (counters and `CT_*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub source: SocketAddrV4,
    pub destination: SocketAddrV4,
    pub protocol: u8,
    /// `Egress`: opened by the endpoint.
    pub direction: Direction,
    pub entry: CtEntry,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// The loaded datapath of one lab instance.
pub struct Datapath {
    ebpf: Ebpf,
    dir: PathBuf,
    endpoints: HashMap<MapData, u32, EndpointInfo>,
    ipcache: LpmTrie<MapData, IpcacheKey, IpcacheValue>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    /// An LRU hash in the kernel; aya reads it with its `HashMap` type.
    ct: HashMap<MapData, CtKey, CtEntry>,
    metrics: PerCpuArray<MapData, u64>,
    config: Array<MapData, u32>,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    prefilter: LpmTrie<MapData, IpcacheKey, u32>,
    prefilter_bypass: HashMap<MapData, u32, u32>,
    conn_limits: HashMap<MapData, LimitKey, LimitValue>,
    conn_counts: HashMap<MapData, LimitKey, u64>,
    events: Option<RingBuf<MapData>>,
}

impl Datapath {
    /// Loads the programs and opens (or creates and pins) the maps under `dir`, which must be on
    /// a bpffs mount.
    pub fn load(dir: &Path) -> Result<Self> {
        let maps_dir = dir.join("maps");
        for d in [&maps_dir, &dir.join("links")] {
            std::fs::create_dir_all(d).map_err(|source| DatapathError::Pin {
                path: d.clone(),
                source,
            })?;
        }
        let paths: Vec<(&str, PathBuf)> =
            PINNED_MAPS.iter().map(|n| (*n, maps_dir.join(n))).collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        for name in ["from_pod", "to_pod", "from_world", "to_world"] {
            program::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let loaded = |name, result: std::result::Result<(), ProgramError>| {
            result.map_err(|source| DatapathError::Program { name, source })
        };
        loaded(
            "xdp_prefilter",
            program::<Xdp>(&mut ebpf, "xdp_prefilter")?.load(),
        )?;
        loaded(
            "conn_counter",
            program::<SockOps>(&mut ebpf, "conn_counter")?.load(),
        )?;
        for name in SOCK_PROGRAMS {
            loaded(name, program::<CgroupSockAddr>(&mut ebpf, name)?.load())?;
        }
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(DatapathError::Missing(name));
        let endpoints = HashMap::try_from(take("ENDPOINTS")?).map_err(map_err("ENDPOINTS"))?;
        let ipcache = LpmTrie::try_from(take("IPCACHE")?).map_err(map_err("IPCACHE"))?;
        let policy = LpmTrie::try_from(take("POLICY")?).map_err(map_err("POLICY"))?;
        let ct = HashMap::try_from(take("CT")?).map_err(map_err("CT"))?;
        let metrics = PerCpuArray::try_from(take("METRICS")?).map_err(map_err("METRICS"))?;
        let config = Array::try_from(take("CONFIG")?).map_err(map_err("CONFIG"))?;
        let services = HashMap::try_from(take("SERVICES")?).map_err(map_err("SERVICES"))?;
        let prefilter = LpmTrie::try_from(take("PREFILTER")?).map_err(map_err("PREFILTER"))?;
        let prefilter_bypass =
            HashMap::try_from(take("PF_BYPASS")?).map_err(map_err("PF_BYPASS"))?;
        let conn_limits =
            HashMap::try_from(take("CONN_LIMITS")?).map_err(map_err("CONN_LIMITS"))?;
        let conn_counts =
            HashMap::try_from(take("CONN_COUNTS")?).map_err(map_err("CONN_COUNTS"))?;
        let events = Some(RingBuf::try_from(take("EVENTS")?).map_err(map_err("EVENTS"))?);
        Ok(Self {
            ebpf,
            dir: dir.to_owned(),
            endpoints,
            ipcache,
            policy,
            ct,
            metrics,
            config,
            services,
            prefilter,
            prefilter_bypass,
            conn_limits,
            conn_counts,
            events,
        })
    }

    /// Attaches `from_pod` (TC ingress) and `to_pod` (TC egress) to the node side of a pod's
    /// veth. Must run on a thread inside the namespace of `iface` (the kernel resolves the
    /// interface there). If links for `iface` are already pinned (a restart), the new programs
    /// replace the old ones atomically. Returns the links to pin with [`Datapath::pin_links`],
    /// which must run outside that thread (pinning from a thread that entered another network
    /// namespace is refused).
    pub fn attach_pod(&mut self, iface: &str) -> Result<Vec<(PathBuf, FdLink)>> {
        Ok(vec![
            self.attach(iface, "from_pod", TcAttachType::Ingress, "in")?,
            self.attach(iface, "to_pod", TcAttachType::Egress, "out")?,
        ])
    }

    fn attach(
        &mut self,
        iface: &str,
        prog: &'static str,
        ty: TcAttachType,
        tag: &str,
    ) -> Result<(PathBuf, FdLink)> {
        let pin = self.dir.join("links").join(format!("{iface}_{tag}"));
        let attach_err = |detail: String| DatapathError::Attach {
            iface: iface.into(),
            detail,
        };
        let program = program::<SchedClassifier>(&mut self.ebpf, prog)?;
        let link_id = if pin.exists() {
            let old = PinnedLink::from_pin(&pin)
                .map_err(|e| attach_err(format!("reading pinned link {}: {e}", pin.display())))?;
            let link = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| attach_err(e.to_string()))?;
            program
                .attach_to_link(link)
                .map_err(|e| attach_err(e.to_string()))?
        } else {
            program
                .attach_with_options(iface, ty, TcAttachOptions::TcxOrder(LinkOrder::default()))
                .map_err(|e| attach_err(format!("{e} (is the interface in this namespace?)")))?
        };
        let link = program
            .take_link(link_id)
            .map_err(|e| attach_err(e.to_string()))?;
        let fd_link = FdLink::try_from(link).map_err(|e| attach_err(e.to_string()))?;
        Ok((pin, fd_link))
    }

    /// Pins links returned by [`Datapath::attach_pod`], so they outlive this process.
    pub fn pin_links(links: Vec<(PathBuf, FdLink)>) -> Result<()> {
        for (pin, link) in links {
            let _ = std::fs::remove_file(&pin);
            link.pin(&pin).map_err(|e| DatapathError::Pin {
                path: pin.clone(),
                source: io::Error::other(format!("{e:?}")),
            })?;
        }
        Ok(())
    }

    /// Attaches the external interface's programs: the XDP prefilter (generic mode, as veths
    /// need) and NodePort translation at TC ingress and egress. Must run on a thread inside the
    /// node namespace; returns the links to pin with [`Datapath::pin_links`].
    pub fn attach_world(&mut self, iface: &str) -> Result<Vec<(PathBuf, FdLink)>> {
        let mut links = vec![
            self.attach(iface, "from_world", TcAttachType::Ingress, "in")?,
            self.attach(iface, "to_world", TcAttachType::Egress, "out")?,
        ];
        let pin = self.dir.join("links").join(format!("{iface}_xdp"));
        if !pin.exists() {
            let attach_err = |detail: String| DatapathError::Attach {
                iface: iface.into(),
                detail,
            };
            let xdp = program::<Xdp>(&mut self.ebpf, "xdp_prefilter")?;
            let id = xdp
                .attach(iface, XdpMode::Skb)
                .map_err(|e| attach_err(format!("XDP (generic mode): {e}")))?;
            let link = xdp.take_link(id).map_err(|e| attach_err(e.to_string()))?;
            links.push((
                pin,
                FdLink::try_from(link).map_err(|e| attach_err(e.to_string()))?,
            ));
        }
        Ok(links)
    }

    /// Adds a CIDR to the prefilter's deny list.
    pub fn prefilter_add(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = cidr_key(addr, prefix);
        self.prefilter
            .insert(&key, 1, 0)
            .map_err(map_err("PREFILTER"))
    }

    pub fn prefilter_remove(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = cidr_key(addr, prefix);
        match self.prefilter.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("PREFILTER")(e)),
        }
    }

    pub fn prefilter(&self) -> Vec<(Ipv4Addr, u8)> {
        self.prefilter
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| {
                (
                    Ipv4Addr::from(u32::from_be(k.data().addr)),
                    k.prefix_len() as u8,
                )
            })
            .collect()
    }

    /// The unsafe NodePort bypass: connections to `node_port` skip policy.
    pub fn set_bypass(&mut self, node_port: u16, on: bool) -> Result<()> {
        let key = u32::from(node_port);
        if on {
            self.prefilter_bypass
                .insert(key, 1, 0)
                .map_err(map_err("PF_BYPASS"))
        } else {
            match self.prefilter_bypass.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err("PF_BYPASS")(e)),
            }
        }
    }

    pub fn bypassed(&self) -> Vec<u16> {
        self.prefilter_bypass
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| k as u16)
            .collect()
    }

    /// Attaches the socket load balancer and the connection counter to the cgroup holding every
    /// pod's processes and pins the links. After a restart the pinned links get the freshly
    /// loaded programs atomically, so no connect or close goes unseen in between.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<()> {
        let attach_err = |name: &str, detail: String| DatapathError::Attach {
            iface: cgroup.display().to_string(),
            detail: format!("{name}: {detail}"),
        };
        let file = std::fs::File::open(cgroup)
            .map_err(|e| attach_err("opening the cgroup", e.to_string()))?;
        for name in std::iter::once("conn_counter").chain(SOCK_PROGRAMS) {
            let pin = self.dir.join("links").join(name);
            if pin.exists() {
                let fd = self
                    .ebpf
                    .program(name)
                    .ok_or(DatapathError::Missing(name))?
                    .fd()
                    .map_err(|source| DatapathError::Program { name, source })?;
                update_pinned_link(&pin, fd.as_fd())
                    .map_err(|e| attach_err(name, e.to_string()))?;
                continue;
            }
            // Cgroup BPF links always coexist with other programs; the kernel wants no flags.
            let link = if name == "conn_counter" {
                let p = program::<SockOps>(&mut self.ebpf, name)?;
                let id = p
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(name, format!("{e:?}")))?;
                p.take_link(id).map(FdLink::try_from)
            } else {
                let p = program::<CgroupSockAddr>(&mut self.ebpf, name)?;
                let id = p
                    .attach(&file, CgroupAttachMode::Single)
                    .map_err(|e| attach_err(name, format!("{e:?}")))?;
                p.take_link(id).map(FdLink::try_from)
            }
            .map_err(|e| attach_err(name, e.to_string()))?
            .map_err(|e| attach_err(name, e.to_string()))?;
            Self::pin_links(vec![(pin, link)])?;
        }
        Ok(())
    }

    /// Sets the backends of a service address (replacing any previous ones). Backends are
    /// written before the count that makes them visible, so a connect never sees a missing slot.
    pub fn set_service(
        &mut self,
        vip: Ipv4Addr,
        port: u16,
        proto: u8,
        service_id: u32,
        backends: &[(Ipv4Addr, u16)],
    ) -> Result<()> {
        let key = |slot: u16| ServiceKey {
            vip: u32::from(vip).to_be(),
            port: port.to_be(),
            proto,
            _pad: 0,
            slot,
            _pad2: 0,
        };
        let old_count = self.services.get(&key(0), 0).map(|v| v.count).unwrap_or(0);
        for (i, (ip, p)) in backends.iter().enumerate() {
            let value = ServiceValue {
                backend_ip: u32::from(*ip).to_be(),
                backend_port: p.to_be(),
                count: 0,
                service_id,
            };
            self.services
                .insert(key(i as u16 + 1), value, 0)
                .map_err(map_err("SERVICES"))?;
        }
        let head = ServiceValue {
            backend_ip: 0,
            backend_port: 0,
            count: backends.len() as u16,
            service_id,
        };
        self.services
            .insert(key(0), head, 0)
            .map_err(map_err("SERVICES"))?;
        for slot in backends.len() as u16 + 1..=old_count {
            let _ = self.services.remove(&key(slot));
        }
        Ok(())
    }

    pub fn remove_service(&mut self, vip: Ipv4Addr, port: u16, proto: u8) -> Result<()> {
        self.set_service(vip, port, proto, 0, &[])?;
        let key = ServiceKey {
            vip: u32::from(vip).to_be(),
            port: port.to_be(),
            proto,
            _pad: 0,
            slot: 0,
            _pad2: 0,
        };
        let _ = self.services.remove(&key);
        Ok(())
    }

    pub fn set_limit(&mut self, key: LimitKey, value: LimitValue) -> Result<()> {
        self.conn_limits
            .insert(key, value, 0)
            .map_err(map_err("CONN_LIMITS"))
    }

    pub fn remove_limit(&mut self, key: LimitKey) -> Result<()> {
        match self.conn_limits.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("CONN_LIMITS")(e)),
        }
    }

    pub fn limits(&self) -> BTreeMap<LimitKey, LimitValue> {
        self.conn_limits.iter().filter_map(|r| r.ok()).collect()
    }

    /// Connections per bucket: established ones plus handshakes holding a slot.
    pub fn conn_counts(&self) -> BTreeMap<LimitKey, u64> {
        self.conn_counts.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn remove_conn_count(&mut self, key: LimitKey) {
        let _ = self.conn_counts.remove(&key);
    }

    /// Forgets the pinned links of a pod's veth (the kernel detaches them when the veth goes).
    pub fn detach_pod(&mut self, iface: &str) {
        for tag in ["in", "out"] {
            let _ = std::fs::remove_file(self.dir.join("links").join(format!("{iface}_{tag}")));
        }
    }

    pub fn set_endpoint(&mut self, ifindex: u32, ep: &EndpointEntry) -> Result<()> {
        let info = EndpointInfo {
            ep_id: ep.ep_id,
            identity: ep.identity,
            ipv4: u32::from(ep.ip).to_be(),
            flags: ep.flags,
        };
        self.endpoints
            .insert(ifindex, info, 0)
            .map_err(map_err("ENDPOINTS"))
    }

    pub fn remove_endpoint(&mut self, ifindex: u32) -> Result<()> {
        match self.endpoints.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("ENDPOINTS")(e)),
        }
    }

    /// Every endpoint entry as (ifindex, entry).
    pub fn endpoints(&self) -> Vec<(u32, EndpointEntry)> {
        self.endpoints
            .iter()
            .filter_map(|r| r.ok())
            .map(|(ifindex, e)| {
                let entry = EndpointEntry {
                    ep_id: e.ep_id,
                    identity: e.identity,
                    ip: Ipv4Addr::from(u32::from_be(e.ipv4)),
                    flags: e.flags,
                };
                (ifindex, entry)
            })
            .collect()
    }

    pub fn set_ipcache(&mut self, addr: Ipv4Addr, prefix: u8, value: IpcacheValue) -> Result<()> {
        let key = cidr_key(addr, prefix);
        self.ipcache
            .insert(&key, value, 0)
            .map_err(map_err("IPCACHE"))
    }

    pub fn remove_ipcache(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = cidr_key(addr, prefix);
        match self.ipcache.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("IPCACHE")(e)),
        }
    }

    /// Every ipcache entry as (address, prefix length, value).
    pub fn ipcache(&self) -> Vec<(Ipv4Addr, u8, IpcacheValue)> {
        self.ipcache
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| {
                (
                    Ipv4Addr::from(u32::from_be(k.data().addr)),
                    k.prefix_len() as u8,
                    v,
                )
            })
            .collect()
    }

    pub fn set_policy(&mut self, key: &MapKey, value: &MapValue) -> Result<()> {
        self.policy
            .insert(&policy_key(key), policy_value(value), 0)
            .map_err(map_err("POLICY"))
    }

    pub fn remove_policy(&mut self, key: &MapKey) -> Result<()> {
        self.remove_policy_key(&policy_key(key))
    }

    fn remove_policy_key(&mut self, key: &Key<PolicyKey>) -> Result<()> {
        match self.policy.remove(key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("POLICY")(e)),
        }
    }

    /// Removes every policy entry that `keep` refuses, and any key user space would never
    /// write; returns how many went.
    pub fn retain_policy(&mut self, keep: impl Fn(&MapKey) -> bool) -> Result<usize> {
        let gone: Vec<Key<PolicyKey>> = self
            .policy
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !map_key(k).is_some_and(|k| keep(&k)))
            .collect();
        for k in &gone {
            self.remove_policy_key(k)?;
        }
        Ok(gone.len())
    }

    pub fn set_config_flags(&mut self, flags: u32) -> Result<()> {
        self.config
            .set(CONFIG_FLAGS, flags, 0)
            .map_err(map_err("CONFIG"))
    }

    pub fn config_flags(&self) -> u32 {
        self.config.get(&CONFIG_FLAGS, 0).unwrap_or(0)
    }

    /// Sum over CPUs of every non-zero counter, by index (see `enforcer_common::metric_index`).
    pub fn metrics(&self) -> Vec<(u32, u64)> {
        (0..METRICS_LEN)
            .filter_map(|i| {
                let v: u64 = self.metrics.get(&i, 0).ok()?.iter().sum();
                (v != 0).then_some((i, v))
            })
            .collect()
    }

    pub fn conntrack(&self) -> Vec<Connection> {
        self.ct
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, entry)| Connection {
                source: SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(k.saddr)),
                    u16::from_be(k.sport),
                ),
                destination: SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(k.daddr)),
                    u16::from_be(k.dport),
                ),
                protocol: k.proto,
                direction: if k.direction == DIR_INGRESS {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                entry,
            })
            .collect()
    }

    /// Removes the tracking entries of connections from or to `addr` (used when an endpoint
    /// goes away).
    pub fn flush_conntrack(&mut self, addr: Ipv4Addr) {
        let addr = u32::from(addr).to_be();
        let keys: Vec<CtKey> = self
            .ct
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.saddr == addr || k.daddr == addr)
            .collect();
        for k in keys {
            let _ = self.ct.remove(&k);
        }
    }

    /// The reader of the flow-event ring buffer; can be taken once (by the flow recorder).
    pub fn take_events(&mut self) -> Option<EventReader> {
        self.events.take().map(EventReader::new)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }
}

/// Points the link pinned at `pin` to `program` (`BPF_LINK_UPDATE`; the kernel swaps it
/// atomically). aya offers this for TC and XDP links only, not for cgroup ones.
fn update_pinned_link(pin: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        // Explicit, so the tail the kernel checks for zero is not uninitialised padding.
        _pad: u32,
    }
    #[repr(C)]
    struct LinkUpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let get = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the attribute is a valid, fully initialised prefix of `union bpf_attr`; the
    // kernel treats the bytes past its size as zero.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let update = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &update as *const LinkUpdateAttr,
            std::mem::size_of::<LinkUpdateAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The program `name` of the object, as its type `T` (`SchedClassifier`, `SockOps`, ...).
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_common::{POLICY_KEY_FIXED_BITS, POLICY_KEY_FULL_BITS};

    /// The bytes of a policy key as the kernel's LPM trie compares them: most significant
    /// first, so a prefix of the key is a prefix of its bytes.
    fn bytes(k: &PolicyKey) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(k.ep_id.to_ne_bytes());
        out.extend(k.identity.to_ne_bytes());
        out.extend([k.direction, k.proto]);
        out.extend(k.dport.to_ne_bytes());
        out
    }

    #[test]
    fn policy_keys_are_encoded_in_network_order_and_decoded_back() {
        let key = MapKey {
            endpoint: 1,
            identity: 0x0100_0002,
            direction: Direction::Egress,
            protocol: 6,
            port: 30000,
            prefix_len: POLICY_KEY_FIXED_BITS + 8 + 13,
        };
        let encoded = policy_key(&key);
        assert_eq!(encoded.prefix_len(), POLICY_KEY_FIXED_BITS + 21);
        let d = encoded.data();
        assert_eq!(
            bytes(&d),
            [0, 0, 0, 1, 1, 0, 0, 2, DIR_EGRESS, 6, 0x75, 0x30]
        );
        assert_eq!(map_key(&encoded), Some(key));
        let l3 = MapKey {
            protocol: 0,
            port: 0,
            prefix_len: POLICY_KEY_FIXED_BITS,
            ..key
        };
        assert_eq!(map_key(&policy_key(&l3)), Some(l3));
        let foreign = Key::new(POLICY_KEY_FULL_BITS, PolicyKey { direction: 9, ..d });
        assert_eq!(
            map_key(&foreign),
            None,
            "a direction user space never writes"
        );
    }

    #[test]
    fn policy_values_keep_their_host_order_fields() {
        let v = MapValue {
            verdict: Verdict::Redirect,
            audit_verdict: Verdict::Deny,
            proxy_port: 15001,
            rule_ref: 7,
            audit_rule_ref: 9,
        };
        assert_eq!(
            policy_value(&v),
            PolicyValue {
                verdict: VERDICT_REDIRECT,
                audit_verdict: VERDICT_DENY,
                proxy_port: 15001,
                rule_ref: 7,
                audit_rule_ref: 9,
            }
        );
    }
}
