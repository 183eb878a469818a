//! Packet parsing: Ethernet, IPv4 and the L4 header (TCP, UDP, SCTP, ICMP), with bounds checks
//! the verifier accepts. Addresses and ports stay in network order, as in the packet.

use aya_ebpf::programs::TcContext;
use enforcer_common::{
    DROP_CT_INVALID_HEADER, DROP_FRAG_NOT_FOUND, DROP_INVALID_PACKET, DROP_UNSUPPORTED_L3,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// What the policy needs to know about a packet.
#[derive(Clone, Copy, Default)]
pub struct Packet {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// The port the policy is looked up with, network order: the destination port, or for
    /// ICMP the type (Cilium's key layout: an `icmps` rule allows types as ports of ICMP).
    pub policy_port: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ICMP echo reply: matched against the echo request's tracking entry.
    pub icmp_echo_reply: bool,
    /// ICMP error: `inner` holds the tuple of the packet that caused it.
    pub icmp_error: bool,
    pub inner: Tuple,
    pub len: u32,
    pub ifindex: u32,
    /// Offset of the L4 header.
    pub l4_off: usize,
}

/// An IPv4 5-tuple, network order.
#[derive(Clone, Copy, Default)]
pub struct Tuple {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

pub enum Parsed {
    /// An IPv4 packet to decide on.
    Ipv4(Packet),
    /// ARP: always passes (neighbour resolution between pod and node).
    Arp,
    /// Dropped before any policy, with this reason.
    Invalid(u8),
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
fn byte(ctx: &TcContext, offset: usize) -> Option<u8> {
    ptr_at::<u8>(ctx, offset).map(|p| unsafe { *p })
}

#[inline(always)]
fn be16_raw(ctx: &TcContext, offset: usize) -> Option<u16> {
    // Network order kept: the value is stored exactly as in the packet.
    // A plain load: packet headers are 2-byte aligned and BPF loads from packet memory need no
    // alignment (byte-wise unaligned reads confuse the verifier's register tracking).
    ptr_at::<u16>(ctx, offset).map(|p| unsafe { *p })
}

#[inline(always)]
fn be32_raw(ctx: &TcContext, offset: usize) -> Option<u32> {
    ptr_at::<u32>(ctx, offset).map(|p| unsafe { *p })
}

/// Reads at an offset that depends on a header length. Goes through `bpf_skb_load_bytes`: the
/// verifier cannot always follow packet-pointer bounds at such offsets.
#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, offset: usize) -> Option<T> {
    ctx.load::<T>(offset).ok()
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Parsed {
    let Some(proto) = be16_raw(ctx, 12) else {
        return Parsed::Invalid(DROP_INVALID_PACKET);
    };
    let ethertype = u16::from_be(proto);
    if ethertype == ETH_P_ARP {
        return Parsed::Arp;
    }
    if ethertype != ETH_P_IP {
        return Parsed::Invalid(DROP_UNSUPPORTED_L3);
    }
    let l3 = ETH_HLEN;
    let Some(vihl) = byte(ctx, l3) else {
        return Parsed::Invalid(DROP_INVALID_PACKET);
    };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Parsed::Invalid(DROP_INVALID_PACKET);
    }
    let (Some(frag), Some(proto), Some(saddr), Some(daddr)) = (
        be16_raw(ctx, l3 + 6),
        byte(ctx, l3 + 9),
        be32_raw(ctx, l3 + 12),
        be32_raw(ctx, l3 + 16),
    ) else {
        return Parsed::Invalid(DROP_INVALID_PACKET);
    };
    let frag = u16::from_be(frag);
    // A non-first fragment has no L4 header to decide on; pods never need one here (PMTU
    // discovery is on), so it is dropped rather than guessed about.
    if frag & 0x1fff != 0 {
        return Parsed::Invalid(DROP_FRAG_NOT_FOUND);
    }
    let mut p = Packet {
        saddr,
        daddr,
        proto,
        len: ctx.len(),
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        ..Default::default()
    };
    // The verifier needs a constant bound on the variable header length.
    let l4 = l3 + (ihl & 0x3c);
    p.l4_off = l4;
    match proto {
        IPPROTO_TCP => {
            let (Some(sport), Some(dport), Some(flags)) = (
                load::<u16>(ctx, l4),
                load::<u16>(ctx, l4 + 2),
                load::<u8>(ctx, l4 + 13),
            ) else {
                return Parsed::Invalid(DROP_CT_INVALID_HEADER);
            };
            p.sport = sport;
            p.dport = dport;
            p.tcp_flags = flags;
        }
        // SCTP's common header starts with the ports, as UDP's does.
        IPPROTO_UDP | IPPROTO_SCTP => {
            let (Some(sport), Some(dport)) = (load::<u16>(ctx, l4), load::<u16>(ctx, l4 + 2))
            else {
                return Parsed::Invalid(DROP_CT_INVALID_HEADER);
            };
            p.sport = sport;
            p.dport = dport;
        }
        IPPROTO_ICMP => {
            let (Some(ty), Some(code), Some(id)) = (
                load::<u8>(ctx, l4),
                load::<u8>(ctx, l4 + 1),
                load::<u16>(ctx, l4 + 4),
            ) else {
                return Parsed::Invalid(DROP_CT_INVALID_HEADER);
            };
            p.icmp_type = ty;
            p.icmp_code = code;
            p.policy_port = (ty as u16).to_be();
            match ty {
                // Echo is tracked by its identifier, as the "source port" of the request.
                ICMP_ECHO => p.sport = id,
                ICMP_ECHO_REPLY => {
                    p.dport = id;
                    p.icmp_echo_reply = true;
                }
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED => {
                    p.icmp_error = true;
                    let inner = l4 + 8;
                    let (Some(ivihl), Some(iproto), Some(isaddr), Some(idaddr)) = (
                        load::<u8>(ctx, inner),
                        load::<u8>(ctx, inner + 9),
                        load::<u32>(ctx, inner + 12),
                        load::<u32>(ctx, inner + 16),
                    ) else {
                        return Parsed::Invalid(DROP_CT_INVALID_HEADER);
                    };
                    let iihl = ((ivihl & 0x0f) as usize) * 4;
                    if iihl < 20 {
                        return Parsed::Invalid(DROP_CT_INVALID_HEADER);
                    }
                    let il4 = inner + (iihl & 0x3c);
                    p.inner = Tuple {
                        saddr: isaddr,
                        daddr: idaddr,
                        proto: iproto,
                        ..Default::default()
                    };
                    if iproto == IPPROTO_TCP || iproto == IPPROTO_UDP {
                        let (Some(s), Some(d)) = (load::<u16>(ctx, il4), load::<u16>(ctx, il4 + 2))
                        else {
                            return Parsed::Invalid(DROP_CT_INVALID_HEADER);
                        };
                        p.inner.sport = s;
                        p.inner.dport = d;
                    }
                }
                _ => {}
            }
        }
        _ => {}
    }
    if proto != IPPROTO_ICMP {
        p.policy_port = p.dport;
    }
    Parsed::Ipv4(p)
}
