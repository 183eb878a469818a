//! Enforcement at a pod's veth: connection tracking, the policy lookup, flow events and the
//! hand-off of L7 connections to the proxy.
//!
//! Lookup order for a packet seen at an endpoint:
//! 1. a reply (or ICMP error) of a tracked connection of this endpoint passes;
//! 2. otherwise the endpoint's policy is looked up in `POLICY` (one LPM lookup keyed by endpoint,
//!    peer identity, direction, protocol, port; for ICMP the type takes the port's place, as in
//!    Cilium) — on every packet, so a revoked policy stops established connections as in Cilium;
//! 3. a new connection that is allowed gets a tracking entry and a flow event.
//!
//! At `from_pod`, a TCP connection to a local pod whose ingress needs L7 is also handed to the
//! proxy here: `bpf_sk_assign` only works on the ingress side of an interface.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, bpf_sock_tuple},
    helpers::{
        bpf_ktime_get_ns, bpf_sk_assign, bpf_sk_lookup_tcp, bpf_sk_release, bpf_skc_lookup_tcp,
    },
    maps::lpm_trie::Key,
    programs::TcContext,
};
use enforcer_common::*;

use crate::{
    maps::{CONFIG, CT, ENDPOINTS, EVENTS, IPCACHE, METRICS, POLICY},
    packet::{IPPROTO_TCP, Packet, Parsed, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, parse},
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    FromPod,
    ToPod,
}

const BPF_F_CURRENT_NETNS: u64 = u64::MAX; // -1 as the helper's netns argument
const BPF_TCP_LISTEN: u32 = 10;

/// The outcome of the policy for one packet.
#[derive(Clone, Copy)]
struct Decision {
    /// Forward the packet (possibly as AUDIT).
    allow: bool,
    /// Steer to the L7 proxy listening on `proxy_port`.
    redirect: bool,
    proxy_port: u16,
    /// `FLOW_*` verdict for events.
    verdict: u8,
    reason: u8,
    rule_ref: u32,
    /// The rule of the would-be verdict, when a rule decided it.
    audit_rule_ref: u32,
}

pub fn enforce(ctx: &TcContext, hook: Hook) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        // Attached to an interface whose endpoint is gone: fail closed.
        count(METRIC_DROPPED, DROP_INVALID_PACKET, DIR_INGRESS);
        return TC_ACT_SHOT;
    };
    let ep = *ep;
    let dir = if hook == Hook::FromPod {
        DIR_EGRESS
    } else {
        DIR_INGRESS
    };
    let pkt = match parse(ctx) {
        Parsed::Arp => return TC_ACT_OK,
        Parsed::Invalid(reason) => {
            count(METRIC_DROPPED, reason, dir);
            return TC_ACT_SHOT;
        }
        Parsed::Ipv4(p) => p,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if hook == Hook::FromPod && unsafe { (*ctx.skb.skb).mark } & MARK_MASK == MARK_CONN_RST {
        // A reset the datapath sends for this pod (connection limit): not the pod's own traffic.
        return TC_ACT_OK;
    }
    if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & TCP_RST != 0 {
        // A reset ends a handshake that may hold a connection-limit slot.
        crate::limits::reset_seen(&pkt, hook == Hook::ToPod);
    }
    match hook {
        Hook::FromPod => {
            if pkt.saddr != ep.ipv4 {
                return drop_packet(
                    ctx,
                    &pkt,
                    &ep,
                    dir,
                    DROP_INVALID_SOURCE_IP,
                    0,
                    0,
                    0,
                    OBS_FROM_POD,
                );
            }
            egress(ctx, &pkt, &ep, now)
        }
        Hook::ToPod => {
            if pkt.daddr != ep.ipv4 {
                return drop_packet(
                    ctx,
                    &pkt,
                    &ep,
                    dir,
                    DROP_INVALID_PACKET,
                    0,
                    0,
                    0,
                    OBS_TO_POD,
                );
            }
            ingress(ctx, &pkt, &ep, now)
        }
    }
}

/// The pod sends.
#[inline(always)]
fn egress(ctx: &TcContext, pkt: &Packet, ep: &EndpointInfo, now: u64) -> i32 {
    // A reply of a connection the pod accepted.
    let rev = reverse_key(pkt, DIR_INGRESS);
    if let Some(ct) = ct_lookup(&rev, pkt, now) {
        let flags = unsafe { (*ct).flags };
        ct_touch(ct, pkt, now, true);
        count(METRIC_FORWARDED, 0, DIR_EGRESS);
        if flags & CT_FROM_PROXY != 0 {
            // The reply belongs to the proxy's upstream connection: deliver it to the proxy.
            if to_proxy(ctx, pkt, 0, false) {
                return TC_ACT_OK;
            }
            return drop_packet(
                ctx,
                pkt,
                ep,
                DIR_EGRESS,
                DROP_PROXY_UNAVAILABLE,
                ep.identity,
                0,
                0,
                OBS_FROM_POD,
            );
        }
        return TC_ACT_OK;
    }
    if pkt.icmp_error && related(pkt, DIR_INGRESS, now) {
        count(METRIC_FORWARDED, 0, DIR_EGRESS);
        return TC_ACT_OK;
    }

    let dst = ipcache(pkt.daddr);
    let mut d = decide(ep.ep_id, ep.flags, DIR_EGRESS, dst.identity, pkt);
    let key = forward_key(pkt, DIR_EGRESS);
    let existing = ct_lookup(&key, pkt, now);
    if !d.allow {
        if existing.is_some() {
            let _ = CT.remove(key);
        }
        return drop_packet(
            ctx,
            pkt,
            ep,
            DIR_EGRESS,
            d.reason,
            ep.identity,
            dst.identity,
            d.rule_ref,
            OBS_FROM_POD,
        );
    }
    // A local destination whose ingress needs L7: the proxy takes the connection here.
    if !d.redirect && dst.ep_id != 0 && pkt.proto == IPPROTO_TCP {
        let ind = decide(dst.ep_id, dst.ep_flags, DIR_INGRESS, ep.identity, pkt);
        if ind.allow && ind.redirect {
            d.redirect = true;
            d.proxy_port = ind.proxy_port;
            d.verdict = FLOW_REDIRECTED;
        }
    }
    let ct_flags = if d.redirect { CT_PROXY_REDIRECT } else { 0 };
    match existing {
        Some(ct) => ct_touch(ct, pkt, now, false),
        None => {
            if !ct_create(&key, pkt, now, ct_flags, d.rule_ref) {
                return drop_packet(
                    ctx,
                    pkt,
                    ep,
                    DIR_EGRESS,
                    DROP_CT_MAP_INSERTION_FAILED,
                    ep.identity,
                    dst.identity,
                    0,
                    OBS_FROM_POD,
                );
            }
            emit(
                pkt,
                ep.ep_id,
                DIR_EGRESS,
                d.verdict,
                d.reason,
                0,
                ep.identity,
                dst.identity,
                d.rule_ref,
                OBS_FROM_POD,
                ct_flags,
                d.audit_rule_ref,
            );
        }
    }
    if d.redirect && !to_proxy(ctx, pkt, d.proxy_port, is_new_syn(pkt)) {
        return drop_packet(
            ctx,
            pkt,
            ep,
            DIR_EGRESS,
            DROP_PROXY_UNAVAILABLE,
            ep.identity,
            dst.identity,
            d.rule_ref,
            OBS_FROM_POD,
        );
    }
    count(metric_kind(d.verdict), d.reason, DIR_EGRESS);
    TC_ACT_OK
}

/// The pod receives.
#[inline(always)]
fn ingress(ctx: &TcContext, pkt: &Packet, ep: &EndpointInfo, now: u64) -> i32 {
    // A reply of a connection the pod opened.
    let rev = reverse_key(pkt, DIR_EGRESS);
    if let Some(ct) = ct_lookup(&rev, pkt, now) {
        ct_touch(ct, pkt, now, true);
        count(METRIC_FORWARDED, 0, DIR_INGRESS);
        return TC_ACT_OK;
    }
    if pkt.icmp_error && related(pkt, DIR_EGRESS, now) {
        count(METRIC_FORWARDED, 0, DIR_INGRESS);
        return TC_ACT_OK;
    }

    let src = ipcache(pkt.saddr);
    let mark = unsafe { (*ctx.skb.skb).mark } & MARK_MASK;
    let from_proxy = mark == MARK_FROM_PROXY;
    if mark == MARK_BYPASS {
        // The prefilter's NodePort bypass: no policy at all (the story's misconfiguration).
        let key = forward_key(pkt, DIR_INGRESS);
        match ct_lookup(&key, pkt, now) {
            Some(ct) => ct_touch(ct, pkt, now, false),
            None => {
                if ct_create(&key, pkt, now, CT_BYPASS, 0) {
                    emit(
                        pkt,
                        ep.ep_id,
                        DIR_INGRESS,
                        FLOW_FORWARDED,
                        DROP_NONE,
                        0,
                        src.identity,
                        ep.identity,
                        0,
                        OBS_TO_POD,
                        CT_BYPASS,
                        0,
                    );
                }
            }
        }
        count(METRIC_FORWARDED, 0, DIR_INGRESS);
        return TC_ACT_OK;
    }
    let d = decide(ep.ep_id, ep.flags, DIR_INGRESS, src.identity, pkt);
    let key = forward_key(pkt, DIR_INGRESS);
    let existing = ct_lookup(&key, pkt, now);
    if !d.allow {
        if existing.is_some() {
            let _ = CT.remove(key);
        }
        return drop_packet(
            ctx,
            pkt,
            ep,
            DIR_INGRESS,
            d.reason,
            src.identity,
            ep.identity,
            d.rule_ref,
            OBS_TO_POD,
        );
    }
    if d.redirect && !from_proxy {
        // Only the sending side's hook can hand a connection to the proxy; this one arrived
        // without passing it (it comes from the node itself). Fail closed.
        if existing.is_some() {
            let _ = CT.remove(key);
        }
        return drop_packet(
            ctx,
            pkt,
            ep,
            DIR_INGRESS,
            DROP_PROXY_UNAVAILABLE,
            src.identity,
            ep.identity,
            d.rule_ref,
            OBS_TO_POD,
        );
    }
    if existing.is_none() && is_new_syn(pkt) {
        // Past the connection limit: refuse with a reset before the pod sees anything.
        if let Some(limit_ref) =
            crate::limits::admit(ep.ep_id, u16::from_be(pkt.dport), src.identity, pkt)
        {
            count(METRIC_DROPPED, DROP_CONN_LIMIT, DIR_INGRESS);
            emit(
                pkt,
                ep.ep_id,
                DIR_INGRESS,
                FLOW_DROPPED,
                DROP_CONN_LIMIT,
                0,
                src.identity,
                ep.identity,
                limit_ref,
                OBS_TO_POD,
                0,
                0,
            );
            return crate::limits::refuse(ctx, pkt, pkt.ifindex);
        }
    }
    let ct_flags = if from_proxy { CT_FROM_PROXY } else { 0 };
    let verdict = if d.verdict == FLOW_REDIRECTED {
        FLOW_FORWARDED
    } else {
        d.verdict
    };
    match existing {
        Some(ct) => ct_touch(ct, pkt, now, false),
        None => {
            if !ct_create(&key, pkt, now, ct_flags, d.rule_ref) {
                // The SYN goes no further: give back the slot it may have taken.
                crate::limits::reset_seen(pkt, true);
                return drop_packet(
                    ctx,
                    pkt,
                    ep,
                    DIR_INGRESS,
                    DROP_CT_MAP_INSERTION_FAILED,
                    src.identity,
                    ep.identity,
                    0,
                    OBS_TO_POD,
                );
            }
            emit(
                pkt,
                ep.ep_id,
                DIR_INGRESS,
                verdict,
                d.reason,
                0,
                src.identity,
                ep.identity,
                d.rule_ref,
                OBS_TO_POD,
                ct_flags,
                d.audit_rule_ref,
            );
        }
    }
    count(metric_kind(verdict), d.reason, DIR_INGRESS);
    TC_ACT_OK
}

/// The policy verdict of endpoint `ep_id` for a packet from/to `peer`, from one LPM lookup.
#[inline(always)]
fn decide(ep_id: u32, ep_flags: u32, dir: u8, peer: u32, pkt: &Packet) -> Decision {
    let key = Key::new(
        POLICY_KEY_FULL_BITS,
        PolicyKey {
            ep_id: ep_id.to_be(),
            identity: peer.to_be(),
            direction: dir,
            proto: pkt.proto,
            dport: pkt.policy_port,
        },
    );
    let (verdict, rule_ref, audit_verdict, audit_rule_ref, proxy_port) = match POLICY.get(&key) {
        Some(v) => (
            v.verdict,
            v.rule_ref,
            v.audit_verdict,
            v.audit_rule_ref,
            v.proxy_port,
        ),
        None => (VERDICT_NONE, 0, VERDICT_NONE, 0, 0),
    };
    let (enforced_bit, would_bit) = if dir == DIR_INGRESS {
        (EP_INGRESS_ENFORCED, EP_INGRESS_WOULD_ENFORCE)
    } else {
        (EP_EGRESS_ENFORCED, EP_EGRESS_WOULD_ENFORCE)
    };
    let enforced = resolve(verdict, ep_flags & enforced_bit != 0);
    let would = resolve(audit_verdict, ep_flags & would_bit != 0);
    let audit_all = CONFIG.get(CONFIG_FLAGS).copied().unwrap_or(0) & CFG_AUDIT_ALL != 0;

    if enforced == VERDICT_DENY {
        let reason = deny_reason(verdict);
        if audit_all {
            return Decision {
                allow: true,
                redirect: false,
                proxy_port: 0,
                verdict: FLOW_AUDIT,
                reason,
                rule_ref,
                audit_rule_ref,
            };
        }
        return Decision {
            allow: false,
            redirect: false,
            proxy_port: 0,
            verdict: FLOW_DROPPED,
            reason,
            rule_ref,
            audit_rule_ref,
        };
    }
    let redirect = enforced == VERDICT_REDIRECT;
    if would == VERDICT_DENY {
        // Forwarded now, but a policy in audit mode would drop it.
        return Decision {
            allow: true,
            redirect,
            proxy_port,
            verdict: FLOW_AUDIT,
            reason: deny_reason(audit_verdict),
            rule_ref: audit_rule_ref,
            audit_rule_ref,
        };
    }
    Decision {
        allow: true,
        redirect,
        proxy_port,
        verdict: if redirect {
            FLOW_REDIRECTED
        } else {
            FLOW_FORWARDED
        },
        reason: DROP_NONE,
        rule_ref,
        audit_rule_ref,
    }
}

/// A stored verdict, or the endpoint's default when no rule matched.
#[inline(always)]
fn resolve(stored: u8, default_deny: bool) -> u8 {
    match stored {
        VERDICT_NONE if default_deny => VERDICT_DENY,
        VERDICT_NONE => VERDICT_ALLOW,
        v => v,
    }
}

#[inline(always)]
fn deny_reason(stored: u8) -> u8 {
    if stored == VERDICT_DENY {
        DROP_POLICY_DENY
    } else {
        DROP_POLICY_DENIED
    }
}

#[inline(always)]
fn ipcache(addr: u32) -> IpcacheValue {
    match IPCACHE.get(Key::new(32, IpcacheKey { addr })) {
        Some(v) => *v,
        None => IpcacheValue {
            identity: IDENTITY_WORLD,
            ep_id: 0,
            ep_flags: 0,
        },
    }
}

/// Hands the packet to the proxy's socket: the connection's own socket if it has one, else the
/// listener on `proxy_port` (a new connection). Returns false when there is no such socket —
/// no proxy means the caller drops the packet (fail closed).
#[inline(always)]
fn to_proxy(ctx: &TcContext, pkt: &Packet, proxy_port: u16, new_conn: bool) -> bool {
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = core::mem::size_of::<u32>() as u32 * 2 + 4;
    tuple.__bindgen_anon_1.ipv4.saddr = pkt.saddr;
    tuple.__bindgen_anon_1.ipv4.daddr = pkt.daddr;
    tuple.__bindgen_anon_1.ipv4.sport = pkt.sport;
    tuple.__bindgen_anon_1.ipv4.dport = pkt.dport;
    let skb = ctx.skb.skb as *mut _;
    if !new_conn {
        let sk = unsafe { bpf_skc_lookup_tcp(skb, &mut tuple, size, BPF_F_CURRENT_NETNS, 0) };
        if !sk.is_null() {
            let listening = unsafe { (*sk).state } == BPF_TCP_LISTEN;
            let ret = if listening {
                -1
            } else {
                unsafe { bpf_sk_assign(skb, sk as *mut _, 0) }
            };
            unsafe { bpf_sk_release(sk as *mut _) };
            if ret == 0 {
                ctx.skb.set_mark(MARK_TO_PROXY);
                return true;
            }
        }
        if proxy_port == 0 {
            return false;
        }
    }
    tuple.__bindgen_anon_1.ipv4.dport = proxy_port.to_be();
    let sk = unsafe { bpf_sk_lookup_tcp(skb, &mut tuple, size, BPF_F_CURRENT_NETNS, 0) };
    if sk.is_null() {
        return false;
    }
    let ret = if unsafe { (*sk).state } == BPF_TCP_LISTEN {
        unsafe { bpf_sk_assign(skb, sk as *mut _, 0) }
    } else {
        -1
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    if ret != 0 {
        return false;
    }
    ctx.skb.set_mark(MARK_TO_PROXY);
    true
}

#[inline(always)]
fn is_new_syn(pkt: &Packet) -> bool {
    pkt.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

#[inline(always)]
fn forward_key(pkt: &Packet, dir: u8) -> CtKey {
    CtKey {
        saddr: pkt.saddr,
        daddr: pkt.daddr,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        direction: dir,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn reverse_key(pkt: &Packet, dir: u8) -> CtKey {
    CtKey {
        saddr: pkt.daddr,
        daddr: pkt.saddr,
        sport: pkt.dport,
        dport: pkt.sport,
        proto: pkt.proto,
        direction: dir,
        _pad: [0; 2],
    }
}

/// An ICMP error about a packet of a tracked connection. The inner header is the packet that
/// caused the error, as the endpoint's peer sent it (so its tuple is the connection's own).
#[inline(always)]
fn related(pkt: &Packet, dir: u8, now: u64) -> bool {
    let key = CtKey {
        saddr: pkt.inner.saddr,
        daddr: pkt.inner.daddr,
        sport: pkt.inner.sport,
        dport: pkt.inner.dport,
        proto: pkt.inner.proto,
        direction: dir,
        _pad: [0; 2],
    };
    let inner = Packet {
        proto: pkt.inner.proto,
        ..*pkt
    };
    ct_lookup(&key, &inner, now).is_some()
}

/// A live tracking entry, or `None` if absent or expired. A fresh SYN on a closing entry starts a
/// new connection (port reuse), so the old entry is dropped.
#[inline(always)]
fn ct_lookup(key: &CtKey, pkt: &Packet, now: u64) -> Option<*mut CtEntry> {
    let ct = CT.get_ptr_mut(key)?;
    let (flags, last) = unsafe { ((*ct).flags, (*ct).last_seen_ns) };
    let lifetime = if key.proto != IPPROTO_TCP {
        CT_LIFETIME_NONTCP_NS
    } else if flags & CT_CLOSING != 0 {
        CT_LIFETIME_CLOSING_NS
    } else if flags & CT_SEEN_REPLY == 0 {
        CT_LIFETIME_TCP_SYN_NS
    } else {
        CT_LIFETIME_TCP_NS
    };
    let reopened = flags & CT_CLOSING != 0 && is_new_syn(pkt);
    if now.wrapping_sub(last) > lifetime || reopened {
        let _ = CT.remove(key);
        return None;
    }
    Some(ct)
}

#[inline(always)]
fn ct_touch(ct: *mut CtEntry, pkt: &Packet, now: u64, reply: bool) {
    unsafe {
        (*ct).last_seen_ns = now;
        (*ct).packets += 1;
        (*ct).bytes += pkt.len as u64;
        let mut flags = (*ct).flags;
        if reply {
            flags |= CT_SEEN_REPLY;
        }
        if pkt.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
            flags |= CT_CLOSING;
        }
        (*ct).flags = flags;
    }
}

#[inline(always)]
fn ct_create(key: &CtKey, pkt: &Packet, now: u64, flags: u32, rule_ref: u32) -> bool {
    let entry = CtEntry {
        created_ns: now,
        last_seen_ns: now,
        packets: 1,
        bytes: pkt.len as u64,
        flags,
        rule_ref,
    };
    CT.insert(key, entry, 0).is_ok()
}

#[expect(
    clippy::too_many_arguments,
    reason = "the packet, the endpoint and the verdict's parts travel together; a struct would only rename them"
)]
#[inline(always)]
fn drop_packet(
    _ctx: &TcContext,
    pkt: &Packet,
    ep: &EndpointInfo,
    dir: u8,
    reason: u8,
    src_identity: u32,
    dst_identity: u32,
    rule_ref: u32,
    obs: u8,
) -> i32 {
    count(METRIC_DROPPED, reason, dir);
    emit(
        pkt,
        ep.ep_id,
        dir,
        FLOW_DROPPED,
        reason,
        0,
        src_identity,
        dst_identity,
        rule_ref,
        obs,
        0,
        0,
    );
    TC_ACT_SHOT
}

#[expect(
    clippy::too_many_arguments,
    reason = "the packet, the endpoint and the verdict's parts travel together; a struct would only rename them"
)]
#[inline(always)]
fn emit(
    pkt: &Packet,
    ep_id: u32,
    dir: u8,
    verdict: u8,
    reason: u8,
    is_reply: u8,
    src_identity: u32,
    dst_identity: u32,
    rule_ref: u32,
    obs: u8,
    ct_flags: u32,
    audit_rule_ref: u32,
) {
    let ev = FlowEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        saddr: pkt.saddr,
        daddr: pkt.daddr,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        tcp_flags: pkt.tcp_flags,
        direction: dir,
        verdict,
        drop_reason: reason,
        is_reply,
        obs_point: obs,
        _pad: 0,
        ep_id,
        src_identity,
        dst_identity,
        rule_ref,
        ifindex: pkt.ifindex,
        len: pkt.len,
        ct_flags,
        audit_rule_ref,
        icmp_type: pkt.icmp_type,
        icmp_code: pkt.icmp_code,
        _pad2: 0,
    };
    if EVENTS.output::<FlowEvent>(&ev, 0).is_err() {
        bump(METRIC_EVENTS_LOST);
    }
}

#[inline(always)]
fn metric_kind(verdict: u8) -> u8 {
    match verdict {
        FLOW_AUDIT => METRIC_AUDIT,
        FLOW_REDIRECTED => METRIC_REDIRECTED,
        FLOW_DROPPED => METRIC_DROPPED,
        _ => METRIC_FORWARDED,
    }
}

#[inline(always)]
fn count(kind: u8, reason: u8, dir: u8) {
    bump(metric_index(kind, reason, dir));
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(c) = METRICS.get_ptr_mut(index) {
        unsafe { *c += 1 };
    }
}
