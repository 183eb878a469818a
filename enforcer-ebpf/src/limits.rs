//! Connection limits, exact under concurrent connects. `to_pod` admits a new connection at its
//! SYN by atomically taking a slot in the bucket's count (refusing it past the limit, by turning
//! the SYN into a TCP reset sent back to the client, so it fails at once instead of retrying);
//! the handshake holds that slot in `CONN_PENDING`. The `sock_ops` program hands the slot to the
//! socket when the handshake completes and frees it when the socket reaches CLOSE, however it
//! dies. A reset in either direction before that frees the slot of the handshake it ends.

use aya_ebpf::{
    bindings::{
        BPF_F_INGRESS, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE, TC_ACT_SHOT,
    },
    helpers::{bpf_get_socket_cookie, bpf_redirect, bpf_skb_change_tail},
    macros::sock_ops,
    maps::lpm_trie::Key,
    programs::{SockOpsContext, TcContext},
};
use enforcer_common::*;

use crate::{
    maps::{CONN_COUNTS, CONN_LIMITS, CONN_PENDING, CONN_SOCKS, IPCACHE},
    packet::{ETH_HLEN, Packet},
};

#[sock_ops]
pub fn conn_counter(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => opened(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => closed(&ctx),
        _ => {}
    }
    0
}

#[inline(always)]
fn ipcache(addr: u32) -> IpcacheValue {
    IPCACHE
        .get(Key::new(32, IpcacheKey { addr }))
        .copied()
        .unwrap_or(IpcacheValue {
            identity: IDENTITY_WORLD,
            ep_id: 0,
            ep_flags: 0,
        })
}

/// The bucket a new connection from `peer` to `ep_id:port` counts in, if a limit applies.
#[inline(always)]
pub fn bucket(ep_id: u32, port: u16, peer: u32) -> Option<(LimitKey, u32, u32)> {
    let key = LimitKey {
        ep_id,
        identity: peer,
        port,
        _pad: 0,
    };
    let limit = unsafe { CONN_LIMITS.get(key) }?;
    Some((
        LimitKey {
            ep_id,
            identity: limit.bucket,
            port,
            _pad: 0,
        },
        limit.max,
        limit.limit_ref,
    ))
}

#[inline(always)]
fn opened(ctx: &SockOpsContext) {
    let local = ipcache(ctx.local_ip4());
    if local.ep_id == 0 {
        return;
    }
    let handshake = PendingKey {
        client_addr: ctx.remote_ip4(),
        server_addr: ctx.local_ip4(),
        client_port: remote_port(ctx.remote_port()),
        server_port: (ctx.local_port() as u16).to_be(),
    };
    let reserved = take_pending(&handshake);
    let peer = ipcache(ctx.remote_ip4()).identity;
    let Some((key, _, _)) = bucket(local.ep_id, ctx.local_port() as u16, peer) else {
        // The limit went away during the handshake.
        if let Some(old) = reserved {
            release(old);
        }
        return;
    };
    match reserved {
        Some(old) if old == key => {}
        other => {
            // Admitted before this limit existed (or under another one): count it now.
            if let Some(old) = other {
                release(old);
            }
            match CONN_COUNTS.get_ptr_mut(key) {
                Some(c) => atomic_add(c, 1),
                None => {
                    // BPF_NOEXIST: if another CPU created it meanwhile, add to that one.
                    if CONN_COUNTS.insert(key, 1, 1).is_err()
                        && let Some(c) = CONN_COUNTS.get_ptr_mut(key)
                    {
                        atomic_add(c, 1);
                    }
                }
            }
        }
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut _) };
    if CONN_SOCKS.insert(cookie, key, 0).is_err() {
        release(key);
        return;
    }
    // Be told when this socket closes.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// `bpf_sock_ops.remote_port` holds the port in network order, in the upper 16 bits on older
/// kernels and the lower 16 on newer ones; a port is never 0, so take the half that is set.
#[inline(always)]
fn remote_port(raw: u32) -> u16 {
    if raw >> 16 != 0 {
        (raw >> 16) as u16
    } else {
        raw as u16
    }
}

/// Removes the handshake's reservation and returns its bucket, if this CPU is the one that
/// removed it (a delete succeeds once, so a slot is never handed over or freed twice).
#[inline(always)]
fn take_pending(handshake: &PendingKey) -> Option<LimitKey> {
    let bucket = unsafe { CONN_PENDING.get(handshake) }.copied()?;
    CONN_PENDING.remove(handshake).ok().map(|_| bucket)
}

/// Gives a slot back.
#[inline(always)]
fn release(key: LimitKey) {
    if let Some(c) = CONN_COUNTS.get_ptr_mut(key) {
        // Every slot is given back once; the check only guards counts user space reset.
        if unsafe { core::ptr::read_volatile(c) } > 0 {
            atomic_add(c, u64::MAX);
        }
    }
}

/// An atomic add (BPF_ATOMIC): several CPUs open and close connections at once.
#[inline(always)]
fn atomic_add(c: *mut u64, v: u64) {
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            c, v,
        )
    };
}

#[inline(always)]
fn closed(ctx: &SockOpsContext) {
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops as *mut _) };
    let Some(key) = (unsafe { CONN_SOCKS.get(cookie) }).copied() else {
        return;
    };
    let _ = CONN_SOCKS.remove(cookie);
    release(key);
}

/// Admits the SYN `pkt` of a new connection from `peer` to `ep_id:port`: takes a slot if a
/// limit applies and one is free. Returns the limit's reference when the SYN must be refused.
/// Concurrent SYNs never overshoot the limit.
#[inline(always)]
pub fn admit(ep_id: u32, port: u16, peer: u32, pkt: &Packet) -> Option<u32> {
    let (key, max, limit_ref) = bucket(ep_id, port, peer)?;
    let handshake = handshake_of(pkt, true);
    if unsafe { CONN_PENDING.get(handshake) }.is_some() {
        // A retransmitted SYN: its handshake holds a slot already.
        return None;
    }
    let count = match CONN_COUNTS.get_ptr_mut(key) {
        Some(c) => c,
        None => {
            let _ = CONN_COUNTS.insert(key, 0, 1);
            CONN_COUNTS.get_ptr_mut(key)?
        }
    };
    // Take a slot, then look: the count read includes every slot taken before it, so no two
    // SYNs can both see room for one. (SYNs racing near the limit may all be refused; the
    // generic BPF CPU has no fetching add that would tell each its own position.)
    atomic_add(count, 1);
    if unsafe { core::ptr::read_volatile(count) } > u64::from(max) {
        atomic_add(count, u64::MAX);
        return Some(limit_ref);
    }
    if CONN_PENDING.insert(handshake, key, 1).is_err() {
        // Full, or an identical SYN on another CPU won: this one holds no slot.
        atomic_add(count, u64::MAX);
    }
    None
}

/// A reset between `pkt`'s endpoints ends a handshake in progress: free its slot.
/// `toward_server`: the packet goes from client to server (it is entering the server's pod).
#[inline(always)]
pub fn reset_seen(pkt: &Packet, toward_server: bool) {
    if let Some(key) = take_pending(&handshake_of(pkt, toward_server)) {
        release(key);
    }
}

/// The handshake `pkt` belongs to; `toward_server`: the packet goes from client to server.
#[inline(always)]
fn handshake_of(pkt: &Packet, toward_server: bool) -> PendingKey {
    if toward_server {
        PendingKey {
            client_addr: pkt.saddr,
            server_addr: pkt.daddr,
            client_port: pkt.sport,
            server_port: pkt.dport,
        }
    } else {
        PendingKey {
            client_addr: pkt.daddr,
            server_addr: pkt.saddr,
            client_port: pkt.dport,
            server_port: pkt.sport,
        }
    }
}

/// Rewrites the SYN in `ctx` into a RST|ACK from the server and sends it back through the
/// pod's veth as if the pod had sent it. Returns the TC action.
#[inline(always)]
pub fn refuse(ctx: &TcContext, pkt: &Packet, ifindex: u32) -> i32 {
    let seq: u32 = match ctx.load::<u32>(pkt.l4_off + 4) {
        Ok(v) => u32::from_be(v),
        Err(_) => return TC_ACT_SHOT,
    };
    let (Ok(dst_mac), Ok(src_mac)) = (ctx.load::<[u8; 6]>(0), ctx.load::<[u8; 6]>(6)) else {
        return TC_ACT_SHOT;
    };
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH_HLEN + 40) as u32, 0) } != 0 {
        return TC_ACT_SHOT;
    }
    let mut eth = [0u8; 12];
    eth[..6].copy_from_slice(&src_mac);
    eth[6..].copy_from_slice(&dst_mac);
    let mut h = [0u8; 40];
    // IPv4: version/IHL, TOS, total length 40, id 0, DF, TTL 64, TCP.
    h[0] = 0x45;
    h[2..4].copy_from_slice(&40u16.to_be_bytes());
    h[6] = 0x40;
    h[8] = 64;
    h[9] = 6;
    h[12..16].copy_from_slice(&pkt.daddr.to_ne_bytes());
    h[16..20].copy_from_slice(&pkt.saddr.to_ne_bytes());
    // TCP: ports swapped, seq 0, ack = their seq + 1, header 20 bytes, RST|ACK, window 0.
    h[20..22].copy_from_slice(&pkt.dport.to_ne_bytes());
    h[22..24].copy_from_slice(&pkt.sport.to_ne_bytes());
    h[28..32].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    h[32] = 5 << 4;
    h[33] = 0x14;
    let ip_sum = fold(sum_words(&h, 0, 20));
    h[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP checksum over the pseudo-header (addresses, protocol, length) and the header.
    let pseudo = sum_words(&h, 12, 20) + 6 + 20;
    let tcp_sum = fold(pseudo + sum_words(&h, 20, 40));
    h[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
    if ctx.store(0, &eth, 0).is_err() || ctx.store(ETH_HLEN, &h, 0).is_err() {
        return TC_ACT_SHOT;
    }
    ctx.skb.set_mark(MARK_CONN_RST);
    unsafe { bpf_redirect(ifindex, u64::from(BPF_F_INGRESS)) as i32 }
}

#[inline(always)]
fn sum_words(h: &[u8; 40], from: usize, to: usize) -> u32 {
    let mut sum = 0u32;
    let mut i = from;
    while i < to {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
