//! The maps of the datapath. User space (`enforcer::datapath`) owns their contents; names stay
//! under 16 bytes (the kernel's limit) and match the names user space opens them by.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    CtEntry, CtKey, EndpointInfo, IpcacheKey, IpcacheValue, LimitKey, LimitValue, METRICS_LEN,
    NatValue, PendingKey, PolicyKey, PolicyValue, RevNatKey, RevNatValue, ServiceKey, ServiceValue,
};

/// Pods by the ifindex of the node side of their veth.
#[map(name = "ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::with_max_entries(4096, 0);

/// Address (longest prefix) to identity: pods, the node, CIDR identities, world as 0.0.0.0/0.
#[map(name = "IPCACHE")]
pub static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> = LpmTrie::with_max_entries(65536, 0);

/// Distilled policy: (endpoint, peer identity, direction, protocol, port prefix) to verdicts.
#[map(name = "POLICY")]
pub static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(262_144, 0);

/// Connection tracking.
#[map(name = "CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(131_072, 0);

/// Flow events for user space.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Packet counters by verdict, reason and direction (see `metric_index`).
#[map(name = "METRICS")]
pub static METRICS: PerCpuArray<u64> = PerCpuArray::with_max_entries(METRICS_LEN, 0);

/// Global switches written by user space, indexed by `CONFIG_*`.
#[map(name = "CONFIG")]
pub static CONFIG: Array<u32> = Array::with_max_entries(4, 0);

/// ClusterIP services and their backends (socket-level load balancing).
#[map(name = "SERVICES")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::with_max_entries(65536, 0);

/// Which service address a socket used, to translate replies and `getpeername()` back.
#[map(name = "SOCK_REVNAT")]
pub static SOCK_REVNAT: LruHashMap<RevNatKey, RevNatValue> = LruHashMap::with_max_entries(65536, 0);

/// NodePort connections: the client's tuple towards the node → the chosen backend.
#[map(name = "NODEPORT_NAT")]
pub static NODEPORT_NAT: LruHashMap<CtKey, NatValue> = LruHashMap::with_max_entries(65536, 0);

/// NodePort replies: the backend's tuple towards the client → the node's address and port.
#[map(name = "NODEPORT_RNAT")]
pub static NODEPORT_RNAT: LruHashMap<CtKey, NatValue> = LruHashMap::with_max_entries(65536, 0);

/// The prefilter's deny list: source CIDRs dropped at XDP on the external interface.
#[map(name = "PREFILTER")]
pub static PREFILTER: LpmTrie<IpcacheKey, u32> = LpmTrie::with_max_entries(16384, 0);

/// NodePorts (host order, as u32) whose policy the prefilter skips. Deliberately unsafe: it
/// reproduces the misconfiguration of the 72-hour exposure story.
#[map(name = "PF_BYPASS")]
pub static PREFILTER_BYPASS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Connection limits: (server endpoint, port, peer identity) → the limit and its bucket.
#[map(name = "CONN_LIMITS")]
pub static CONN_LIMITS: HashMap<LimitKey, LimitValue> = HashMap::with_max_entries(65536, 0);

/// Connections per bucket: established ones (counted by the sock_ops program) plus handshakes
/// in progress (a slot reserved by the SYN, see `CONN_PENDING`).
#[map(name = "CONN_COUNTS")]
pub static CONN_COUNTS: HashMap<LimitKey, u64> = HashMap::with_max_entries(65536, 0);

/// Handshakes holding a slot in `CONN_COUNTS`: reserved when `to_pod` admits the SYN, handed to
/// the socket when the handshake completes, released when a reset ends it.
#[map(name = "CONN_PENDING")]
pub static CONN_PENDING: HashMap<PendingKey, LimitKey> = HashMap::with_max_entries(65536, 0);

/// Which bucket each counted socket (by cookie) is in, to count its close.
#[map(name = "CONN_SOCKS")]
pub static CONN_SOCKS: LruHashMap<u64, LimitKey> = LruHashMap::with_max_entries(262_144, 0);
