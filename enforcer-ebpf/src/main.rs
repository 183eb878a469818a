//! The lab's kernel programs. `from_pod` and `to_pod` enforce CiliumNetworkPolicy on the node
//! side of each pod's veth (TC ingress = the pod's egress, TC egress = the pod's ingress), with
//! connection tracking, flow events and the steering of L7 connections to the proxy.
//!
//! Every program fails closed: a packet it cannot parse or decide on is dropped with a reason.
#![no_std]
#![no_main]
// Atomic adds for the connection counters (the BPF target has no atomic fetch_add in core).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod limits;
mod maps;
mod packet;
mod policy;
mod sock;
mod world;

use aya_ebpf::{macros::classifier, programs::TcContext};

use crate::policy::{Hook, enforce};

/// Packets leaving a pod (TC ingress on the node side of its veth): the pod's egress.
#[classifier]
pub fn from_pod(ctx: TcContext) -> i32 {
    enforce(&ctx, Hook::FromPod)
}

/// Packets entering a pod (TC egress on the node side of its veth): the pod's ingress.
#[classifier]
pub fn to_pod(ctx: TcContext) -> i32 {
    enforce(&ctx, Hook::ToPod)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
