//! The node's external interface (`ext0`): the XDP prefilter that drops listed source CIDRs
//! before the stack, and NodePort translation — `from_world` (TC ingress) sends a connection to
//! a NodePort on to a ready backend pod, keeping the client's address so the pod's ingress
//! policy (`fromCIDR`, `fromEntities: world`) applies to it; `to_world` (TC egress) translates
//! the replies back.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::{classifier, xdp},
    maps::lpm_trie::Key,
    programs::{TcContext, XdpContext},
};
use enforcer_common::*;

use crate::{
    maps::{
        EVENTS, IPCACHE, METRICS, NODEPORT_NAT, NODEPORT_RNAT, PREFILTER, PREFILTER_BYPASS,
        SERVICES,
    },
    packet::{ETH_HLEN, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN},
};

/// What NodePort translation needs of a TCP or UDP packet, read with `bpf_skb_load_bytes`
/// (robust for the verifier; this path is not hot).
#[derive(Clone, Copy)]
struct Packet {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    tcp_flags: u8,
    l4_off: usize,
    len: u32,
    ifindex: u32,
}

/// `None` for anything that is not IPv4 TCP/UDP (those pass untouched: not NodePort traffic).
#[inline(always)]
fn parse_l4(ctx: &TcContext) -> Option<Packet> {
    let ethertype: u16 = ctx.load(12).ok()?;
    if u16::from_be(ethertype) != ETH_P_IP {
        return None;
    }
    let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    if u16::from_be(frag) & 0x1fff != 0 {
        return None;
    }
    let l4_off = ETH_HLEN + ((vihl & 0x0f) as usize * 4);
    let tcp_flags = if proto == IPPROTO_TCP {
        ctx.load::<u8>(l4_off + 13).ok()?
    } else {
        0
    };
    Some(Packet {
        saddr: ctx.load(IP_SRC_OFF).ok()?,
        daddr: ctx.load(IP_DST_OFF).ok()?,
        sport: ctx.load(l4_off).ok()?,
        dport: ctx.load(l4_off + 2).ok()?,
        proto,
        tcp_flags,
        l4_off,
        len: ctx.len(),
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
    })
}

const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;

/// Drops packets from listed source CIDRs before the kernel's stack sees them.
#[xdp]
pub fn xdp_prefilter(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Ethernet + IPv4 without options is enough to decide; anything shorter passes on to TC,
    // which parses fully and fails closed itself.
    if start + ETH_HLEN + 20 > end {
        return xdp_action::XDP_PASS;
    }
    let ethertype = u16::from_be(unsafe { core::ptr::read_unaligned((start + 12) as *const u16) });
    if ethertype != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    let saddr = unsafe { core::ptr::read_unaligned((start + IP_SRC_OFF) as *const u32) };
    if PREFILTER
        .get(Key::new(32, IpcacheKey { addr: saddr }))
        .is_none()
    {
        return xdp_action::XDP_PASS;
    }
    let daddr = unsafe { core::ptr::read_unaligned((start + IP_DST_OFF) as *const u32) };
    let proto = unsafe { *((start + ETH_HLEN + 9) as *const u8) };
    let vihl = unsafe { *((start + ETH_HLEN) as *const u8) };
    let (mut sport, mut dport) = (0u16, 0u16);
    // Ports only for option-less headers: a constant offset the verifier can check.
    if vihl == 0x45
        && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)
        && start + ETH_HLEN + 24 <= end
    {
        sport = unsafe { core::ptr::read_unaligned((start + ETH_HLEN + 20) as *const u16) };
        dport = unsafe { core::ptr::read_unaligned((start + ETH_HLEN + 22) as *const u16) };
    }
    bump(metric_index(METRIC_DROPPED, DROP_PREFILTER, DIR_INGRESS));
    let ev = FlowEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        saddr,
        daddr,
        sport,
        dport,
        proto,
        verdict: FLOW_DROPPED,
        drop_reason: DROP_PREFILTER,
        direction: DIR_INGRESS,
        obs_point: OBS_XDP,
        src_identity: ipcache_identity(saddr),
        dst_identity: IDENTITY_HOST,
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        len: (end - start) as u32,
        ..Default::default()
    };
    if EVENTS.output::<FlowEvent>(&ev, 0).is_err() {
        bump(METRIC_EVENTS_LOST);
    }
    xdp_action::XDP_DROP
}

/// Connections from outside to a NodePort go on to a backend pod.
#[classifier]
pub fn from_world(ctx: TcContext) -> i32 {
    let Some(pkt) = parse_l4(&ctx) else {
        return TC_ACT_OK;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let key = nat_key(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto);
    let (addr, port) = match NODEPORT_NAT.get_ptr_mut(key) {
        Some(v) => unsafe {
            (*v).last_seen_ns = now;
            ((*v).addr, (*v).port)
        },
        None => {
            let mut svc = ServiceKey {
                vip: pkt.daddr,
                port: pkt.dport,
                proto: pkt.proto,
                _pad: 0,
                slot: 0,
                _pad2: 0,
            };
            let Some(head) = (unsafe { SERVICES.get(svc) }) else {
                return TC_ACT_OK; // not a NodePort: traffic for the node itself
            };
            let count = head.count;
            if count == 0 {
                emit(&pkt, FLOW_DROPPED, DROP_NO_SERVICE_BACKEND, 0);
                bump(metric_index(
                    METRIC_DROPPED,
                    DROP_NO_SERVICE_BACKEND,
                    DIR_INGRESS,
                ));
                return TC_ACT_SHOT;
            }
            if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
                // Mid-stream packet of a connection we do not know (expired): not ours to guess.
                return TC_ACT_OK;
            }
            svc.slot = (unsafe { bpf_get_prandom_u32() } % count as u32) as u16 + 1;
            let Some(backend) = (unsafe { SERVICES.get(svc) }) else {
                return TC_ACT_SHOT;
            };
            let (addr, port) = (backend.backend_ip, backend.backend_port);
            let fwd = NatValue {
                addr,
                port,
                _pad: 0,
                last_seen_ns: now,
            };
            let back = NatValue {
                addr: pkt.daddr,
                port: pkt.dport,
                _pad: 0,
                last_seen_ns: now,
            };
            let rkey = nat_key(addr, pkt.saddr, port, pkt.sport, pkt.proto);
            if NODEPORT_NAT.insert(key, fwd, 0).is_err()
                || NODEPORT_RNAT.insert(rkey, back, 0).is_err()
            {
                bump(metric_index(
                    METRIC_DROPPED,
                    DROP_CT_MAP_INSERTION_FAILED,
                    DIR_INGRESS,
                ));
                return TC_ACT_SHOT;
            }
            emit(&pkt, FLOW_FORWARDED, DROP_NONE, CT_NODEPORT);
            (addr, port)
        }
    };
    if PREFILTER_BYPASS
        .get_ptr(u32::from(u16::from_be(pkt.dport)))
        .is_some()
    {
        ctx.skb.set_mark(MARK_BYPASS);
    }
    if rewrite(&ctx, &pkt, IP_DST_OFF, pkt.daddr, addr, 2, pkt.dport, port).is_err() {
        bump(metric_index(
            METRIC_DROPPED,
            DROP_INVALID_PACKET,
            DIR_INGRESS,
        ));
        return TC_ACT_SHOT;
    }
    bump(metric_index(METRIC_FORWARDED, 0, DIR_INGRESS));
    TC_ACT_OK
}

/// Replies of NodePort connections leave with the node's address and port again.
#[classifier]
pub fn to_world(ctx: TcContext) -> i32 {
    let Some(pkt) = parse_l4(&ctx) else {
        return TC_ACT_OK;
    };
    let key = nat_key(pkt.saddr, pkt.daddr, pkt.sport, pkt.dport, pkt.proto);
    let Some(v) = NODEPORT_RNAT.get_ptr_mut(key) else {
        return TC_ACT_OK;
    };
    let (addr, port) = unsafe {
        (*v).last_seen_ns = bpf_ktime_get_ns();
        ((*v).addr, (*v).port)
    };
    if rewrite(&ctx, &pkt, IP_SRC_OFF, pkt.saddr, addr, 0, pkt.sport, port).is_err() {
        return TC_ACT_SHOT;
    }
    TC_ACT_OK
}

#[inline(always)]
fn nat_key(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> CtKey {
    CtKey {
        saddr,
        daddr,
        sport,
        dport,
        proto,
        direction: 0,
        _pad: [0; 2],
    }
}

/// Replaces an address (at `addr_off`) and a port (at `port_rel` in the L4 header), fixing the
/// IP and L4 checksums incrementally.
#[expect(
    clippy::too_many_arguments,
    reason = "the packet, the endpoint and the verdict's parts travel together; a struct would only rename them"
)]
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    addr_off: usize,
    old_addr: u32,
    new_addr: u32,
    port_rel: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    let l4 = pkt.l4_off;
    let (csum_off, mangled) = if pkt.proto == IPPROTO_TCP {
        (l4 + 16, 0)
    } else {
        (l4 + 6, BPF_F_MARK_MANGLED_0 as u64)
    };
    ctx.l4_csum_replace(
        csum_off,
        old_addr as u64,
        new_addr as u64,
        BPF_F_PSEUDO_HDR as u64 | mangled | 4,
    )?;
    ctx.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, new_addr as u64, 4)?;
    ctx.store(addr_off, &new_addr, 0)?;
    ctx.l4_csum_replace(csum_off, old_port as u64, new_port as u64, mangled | 2)?;
    ctx.store(l4 + port_rel, &new_port, 0)?;
    Ok(())
}

#[inline(always)]
fn ipcache_identity(addr: u32) -> u32 {
    IPCACHE
        .get(Key::new(32, IpcacheKey { addr }))
        .map(|v| v.identity)
        .unwrap_or(IDENTITY_WORLD)
}

#[inline(always)]
fn emit(pkt: &Packet, verdict: u8, reason: u8, ct_flags: u32) {
    let ev = FlowEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        saddr: pkt.saddr,
        daddr: pkt.daddr,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        tcp_flags: pkt.tcp_flags,
        direction: DIR_INGRESS,
        verdict,
        drop_reason: reason,
        obs_point: OBS_FROM_WORLD,
        src_identity: ipcache_identity(pkt.saddr),
        dst_identity: IDENTITY_HOST,
        ifindex: pkt.ifindex,
        len: pkt.len,
        ct_flags,
        ..Default::default()
    };
    if EVENTS.output::<FlowEvent>(&ev, 0).is_err() {
        bump(METRIC_EVENTS_LOST);
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = METRICS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}
