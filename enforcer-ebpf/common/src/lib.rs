//! The `#[repr(C)]` types shared by the kernel programs (`enforcer-ebpf`) and user space
//! (`enforcer`): map keys and values, flow events, verdicts, drop reasons and packet marks.
//!
//! Rules for everything here: no implicit padding (explicit `_pad` fields), no `bool`, and every
//! field's byte order stated. "Network order" fields hold the bytes exactly as in the packet;
//! "host order" fields are plain integers.
#![no_std]

/// Direction of traffic relative to the endpoint whose policy is consulted.
pub const DIR_INGRESS: u8 = 1;
pub const DIR_EGRESS: u8 = 2;

/// Policy verdicts stored in [`PolicyValue`].
/// `VERDICT_NONE` means no rule of that policy set matched: the endpoint's default applies.
pub const VERDICT_NONE: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;
pub const VERDICT_DENY: u8 = 2;
/// Allowed at L3/L4, but HTTP must be judged by the L7 proxy.
pub const VERDICT_REDIRECT: u8 = 3;

/// [`EndpointInfo::flags`]: which directions are in default deny, for the enforced policy set
/// and for the would-be set (enforced plus audit-mode policies).
pub const EP_INGRESS_ENFORCED: u32 = 1 << 0;
pub const EP_EGRESS_ENFORCED: u32 = 1 << 1;
pub const EP_INGRESS_WOULD_ENFORCE: u32 = 1 << 2;
pub const EP_EGRESS_WOULD_ENFORCE: u32 = 1 << 3;

/// Packet marks. `MARK_TO_PROXY` is set by the datapath on packets it steers to the L7 proxy; a
/// policy-routing rule in the node namespace delivers them locally. `MARK_FROM_PROXY` is set by
/// the proxy (SO_MARK) on its upstream connections, already judged at L7.
pub const MARK_MASK: u32 = 0x0000_0f00;
pub const MARK_TO_PROXY: u32 = 0x0000_0a00;
pub const MARK_FROM_PROXY: u32 = 0x0000_0b00;
/// Set by the node-port program on connections to a NodePort whose policy the (deliberately
/// unsafe) prefilter bypass skips; `to_pod` forwards them without a policy lookup.
pub const MARK_BYPASS: u32 = 0x0000_0c00;

/// Reserved identities, numbered as in Cilium.
pub const IDENTITY_UNKNOWN: u32 = 0;
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_UNMANAGED: u32 = 3;
pub const IDENTITY_HEALTH: u32 = 4;
pub const IDENTITY_INIT: u32 = 5;
pub const IDENTITY_REMOTE_NODE: u32 = 6;
pub const IDENTITY_KUBE_APISERVER: u32 = 7;
pub const IDENTITY_INGRESS: u32 = 8;
/// First identity for label sets of pods (Cilium allocates cluster-scoped ones from 256).
pub const IDENTITY_FIRST_POD: u32 = 256;
/// First identity for CIDR prefixes named in policies (Cilium's local scope starts at 2^24).
pub const IDENTITY_FIRST_CIDR: u32 = 1 << 24;

/// Flow verdicts, numbered as Hubble's `Verdict` enum.
pub const FLOW_FORWARDED: u8 = 1;
pub const FLOW_DROPPED: u8 = 2;
pub const FLOW_ERROR: u8 = 3;
pub const FLOW_AUDIT: u8 = 4;
pub const FLOW_REDIRECTED: u8 = 5;

/// Drop reasons, numbered as Cilium's (`pkg/monitor/api/drop.go`) where Cilium has one.
pub const DROP_NONE: u8 = 0;
pub const DROP_INVALID_SOURCE_IP: u8 = 132;
/// Default deny: a policy selects the endpoint in this direction and no rule allows the flow.
pub const DROP_POLICY_DENIED: u8 = 133;
pub const DROP_INVALID_PACKET: u8 = 134;
pub const DROP_CT_INVALID_HEADER: u8 = 135;
pub const DROP_UNSUPPORTED_L3: u8 = 139;
pub const DROP_CT_MAP_INSERTION_FAILED: u8 = 155;
pub const DROP_FRAG_NOT_FOUND: u8 = 157;
pub const DROP_NO_SERVICE_BACKEND: u8 = 158;
/// An explicit deny rule (ingressDeny / egressDeny) matched.
pub const DROP_POLICY_DENY: u8 = 181;
/// The lab's own reasons (no Cilium equivalent), kept apart from Cilium's range.
/// The flow needs the L7 proxy but the proxy's socket is not there (fail closed).
pub const DROP_PROXY_UNAVAILABLE: u8 = 240;
/// The connection limit of the destination was reached; the client got a TCP reset.
pub const DROP_CONN_LIMIT: u8 = 241;
/// Dropped by the XDP prefilter on the node's external interface.
pub const DROP_PREFILTER: u8 = 242;

/// Observation points of a flow event.
pub const OBS_FROM_POD: u8 = 1;
pub const OBS_TO_POD: u8 = 2;
pub const OBS_FROM_WORLD: u8 = 3;
pub const OBS_TO_WORLD: u8 = 4;
pub const OBS_XDP: u8 = 5;

/// Value of the `ENDPOINTS` hash map, keyed by the ifindex (u32, host order) of the node-side
/// veth of a pod.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Endpoint id, host order.
    pub ep_id: u32,
    /// Security identity of the pod, host order.
    pub identity: u32,
    /// Pod IPv4 address, network order.
    pub ipv4: u32,
    /// `EP_*` flags, host order.
    pub flags: u32,
}

/// Data of the `IPCACHE` LPM-trie key: an IPv4 prefix, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheKey {
    pub addr: u32,
}

/// Value of the `IPCACHE` map: who owns an address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpcacheValue {
    /// Security identity, host order.
    pub identity: u32,
    /// Endpoint id if the address is a local pod, else 0; host order.
    pub ep_id: u32,
    /// The endpoint's `EP_*` flags (copied from [`EndpointInfo`]), host order.
    pub ep_flags: u32,
}

/// Number of key bits of [`PolicyKey`] always matched exactly: endpoint, identity, direction.
pub const POLICY_KEY_FIXED_BITS: u32 = 32 + 32 + 8;
/// Full prefix length of [`PolicyKey`]: fixed bits, protocol, destination port.
pub const POLICY_KEY_FULL_BITS: u32 = POLICY_KEY_FIXED_BITS + 8 + 16;

/// Data of the `POLICY` LPM-trie key. A prefix shorter than [`POLICY_KEY_FULL_BITS`] wildcards
/// the protocol (prefix = fixed bits) or the low bits of the port (a port range); the most
/// specific entry wins, and user space resolves precedence (deny over allow) before writing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Endpoint id, network order (LPM compares bytes in order).
    pub ep_id: u32,
    /// Peer identity, network order.
    pub identity: u32,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// IP protocol number.
    pub proto: u8,
    /// Destination port, network order. For ICMP the type, as Cilium keys it (`htons(type)`);
    /// 0 for protocols without ports.
    pub dport: u16,
}

/// Value of the `POLICY` map: the verdicts of the enforced and of the would-be policy sets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// `VERDICT_*` of the enforced policies.
    pub verdict: u8,
    /// `VERDICT_*` of all policies including audit-mode ones.
    pub audit_verdict: u8,
    /// Port of the L7 proxy's listener when `verdict` is `VERDICT_REDIRECT`, host order.
    pub proxy_port: u16,
    /// Which rule decided `verdict` (index into user space's rule table), host order.
    pub rule_ref: u32,
    /// Which rule decided `audit_verdict`, host order.
    pub audit_rule_ref: u32,
}

/// Key of the connection-tracking map: the tuple of the packet that opened the connection and
/// the direction in which it was seen by the endpoint (`DIR_EGRESS`: opened by the endpoint).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    /// Network order.
    pub saddr: u32,
    /// Network order.
    pub daddr: u32,
    /// Network order (ICMP echo: the identifier).
    pub sport: u16,
    /// Network order (ICMP echo: 0).
    pub dport: u16,
    pub proto: u8,
    pub direction: u8,
    pub _pad: [u8; 2],
}

/// [`CtEntry::flags`].
pub const CT_PROXY_REDIRECT: u32 = 1 << 0;
pub const CT_FROM_PROXY: u32 = 1 << 1;
pub const CT_SEEN_REPLY: u32 = 1 << 2;
pub const CT_CLOSING: u32 = 1 << 3;
pub const CT_AUDIT: u32 = 1 << 4;
/// Forwarded without policy because of the prefilter's NodePort bypass.
pub const CT_BYPASS: u32 = 1 << 5;
/// A connection that came in through a NodePort.
pub const CT_NODEPORT: u32 = 1 << 6;

/// Value of the connection-tracking map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns` when the connection was opened.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns` of the last packet.
    pub last_seen_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// `CT_*` flags, host order.
    pub flags: u32,
    /// The rule that allowed the connection, host order.
    pub rule_ref: u32,
}

/// Connection-tracking lifetimes: how long an entry stays valid after its last packet.
pub const CT_LIFETIME_TCP_NS: u64 = 6 * 3600 * 1_000_000_000;
pub const CT_LIFETIME_TCP_SYN_NS: u64 = 60 * 1_000_000_000;
pub const CT_LIFETIME_CLOSING_NS: u64 = 10 * 1_000_000_000;
pub const CT_LIFETIME_NONTCP_NS: u64 = 60 * 1_000_000_000;

/// One flow event, written by the datapath to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns` (monotonic since boot).
    pub ts_ns: u64,
    /// Network order.
    pub saddr: u32,
    /// Network order.
    pub daddr: u32,
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
    pub proto: u8,
    /// TCP flags byte (FIN=1, SYN=2, RST=4, PSH=8, ACK=16, ...).
    pub tcp_flags: u8,
    /// `DIR_INGRESS` / `DIR_EGRESS` relative to `ep_id`.
    pub direction: u8,
    /// `FLOW_*`.
    pub verdict: u8,
    /// `DROP_*`, or `DROP_NONE`.
    pub drop_reason: u8,
    /// 1 if the packet is a reply of a tracked connection.
    pub is_reply: u8,
    /// `OBS_*`.
    pub obs_point: u8,
    pub _pad: u8,
    /// Endpoint whose policy decided, host order (0: none).
    pub ep_id: u32,
    /// Identity of the source, host order.
    pub src_identity: u32,
    /// Identity of the destination, host order.
    pub dst_identity: u32,
    /// The rule that decided, host order (0: none, i.e. default deny or no policy).
    pub rule_ref: u32,
    /// ifindex of the observing interface, host order.
    pub ifindex: u32,
    /// Packet length in bytes, host order.
    pub len: u32,
    /// `CT_*` flags of the connection the packet belongs to, host order.
    pub ct_flags: u32,
    /// The rule of the would-be verdict (all policies, audit mode included) when one matched,
    /// host order: lets user space count what a policy in audit mode would allow or drop.
    pub audit_rule_ref: u32,
    /// ICMP type and code of an ICMP packet (`proto` 1), else 0.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad2: u16,
}

/// Indexes of the `CONFIG` array.
pub const CONFIG_FLAGS: u32 = 0;
/// `CONFIG_FLAGS` bit: lab-wide audit mode, every would-be drop is forwarded as AUDIT.
pub const CFG_AUDIT_ALL: u32 = 1 << 0;
/// `CONFIG_FLAGS` bit: emit an event for every new connection that is forwarded (not only drops).
pub const CFG_TRACE_FORWARDED: u32 = 1 << 1;

/// Counter kinds of the `METRICS` per-CPU array.
pub const METRIC_FORWARDED: u8 = 0;
pub const METRIC_DROPPED: u8 = 1;
pub const METRIC_AUDIT: u8 = 2;
pub const METRIC_REDIRECTED: u8 = 3;
/// Index of a counter in the `METRICS` per-CPU array: `(kind << 10) | (reason << 2) | dir`.
pub const METRICS_LEN: u32 = 4 << 10;
#[inline(always)]
pub const fn metric_index(kind: u8, reason: u8, direction: u8) -> u32 {
    ((kind as u32 & 3) << 10) | ((reason as u32) << 2) | (direction as u32 & 3)
}
/// The counter of flow events lost because the ring buffer was full.
pub const METRIC_EVENTS_LOST: u32 = metric_index(METRIC_FORWARDED, 255, 0);

/// Key of the `SERVICES` map (socket-level load balancing of ClusterIP services). Slot 0 is the
/// service itself (its value holds the backend count); slots 1..=count are its backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Virtual IP, network order.
    pub vip: u32,
    /// Service port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    pub _pad: u8,
    /// Backend slot, host order.
    pub slot: u16,
    pub _pad2: u16,
}

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceValue {
    /// Backend address, network order (slot 0: unused).
    pub backend_ip: u32,
    /// Backend port, network order (slot 0: unused).
    pub backend_port: u16,
    /// Slot 0: number of backends, host order.
    pub count: u16,
    /// Service id, host order (for reverse translation and visibility).
    pub service_id: u32,
}

/// Key of the `SOCK_REVNAT` map: a socket and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNatKey {
    pub cookie: u64,
    /// Network order.
    pub backend_ip: u32,
    /// Network order.
    pub backend_port: u16,
    pub _pad: u16,
}

/// Value of the `SOCK_REVNAT` map: the service address the application used.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RevNatValue {
    /// Network order.
    pub vip: u32,
    /// Network order.
    pub port: u16,
    pub _pad: u16,
}

/// Value of the NodePort translation maps: an address and port, network order. Keyed by a
/// [`CtKey`] (direction 0): in `NODEPORT_NAT` the client's tuple towards the node, in
/// `NODEPORT_RNAT` the backend's reply tuple towards the client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatValue {
    /// Network order.
    pub addr: u32,
    /// Network order.
    pub port: u16,
    pub _pad: u16,
    /// `bpf_ktime_get_ns` of the last packet (expiry is by LRU eviction and time).
    pub last_seen_ns: u64,
}

/// A connection-limit bucket: the server endpoint, its port and a peer identity (0 when the
/// selected peers share one count). Key of `CONN_LIMITS` (with the peer's own identity) and of
/// `CONN_COUNTS` (with the bucket's).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LimitKey {
    /// Host order.
    pub ep_id: u32,
    /// Host order.
    pub identity: u32,
    /// Host order.
    pub port: u16,
    pub _pad: u16,
}

/// Value of `CONN_LIMITS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LimitValue {
    /// Most established connections, host order.
    pub max: u32,
    /// Identity of the count this peer uses (0: shared by all selected peers), host order.
    pub bucket: u32,
    /// Index of the limit in user space's table (flows name it), host order.
    pub limit_ref: u32,
}

/// A TCP handshake in progress towards a limited port, client to server, all network order.
/// Key of `CONN_PENDING` (whose value is the bucket holding the handshake's slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub client_addr: u32,
    pub server_addr: u32,
    pub client_port: u16,
    pub server_port: u16,
}

/// Set on the resets the datapath sends on behalf of a pod (connection limit): they leave the
/// pod's veth without a policy lookup.
pub const MARK_CONN_RST: u32 = 0x0000_0d00;

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all types are repr(C), Copy, contain only integers and have no implicit padding.
    unsafe impl aya::Pod for EndpointInfo {}
    unsafe impl aya::Pod for IpcacheKey {}
    unsafe impl aya::Pod for IpcacheValue {}
    unsafe impl aya::Pod for PolicyKey {}
    unsafe impl aya::Pod for PolicyValue {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for ServiceValue {}
    unsafe impl aya::Pod for RevNatKey {}
    unsafe impl aya::Pod for RevNatValue {}
    unsafe impl aya::Pod for NatValue {}
    unsafe impl aya::Pod for LimitKey {}
    unsafe impl aya::Pod for LimitValue {}
    unsafe impl aya::Pod for PendingKey {}
}

// Layout checks: a size change here is a change of the kernel ABI of the maps.
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 16);
const _: () = assert!(core::mem::size_of::<IpcacheValue>() == 12);
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 12);
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 12);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<PendingKey>() == 12);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 40);
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 64);
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 12);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 12);
const _: () = assert!(core::mem::size_of::<RevNatKey>() == 16);
const _: () = assert!(core::mem::size_of::<RevNatValue>() == 8);
const _: () = assert!(core::mem::size_of::<NatValue>() == 16);
const _: () = assert!(core::mem::size_of::<LimitKey>() == 12);
const _: () = assert!(core::mem::size_of::<LimitValue>() == 12);
