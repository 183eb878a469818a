//! Socket-level load balancing of ClusterIP services, as Cilium's kube-proxy replacement does it:
//! `connect()` and `sendmsg()` to a service address are rewritten to a backend before any packet
//! exists, so the policy datapath only ever sees real pod addresses. `recvmsg()` and
//! `getpeername()` translate back, so applications still see the address they used.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use enforcer_common::{RevNatKey, RevNatValue, ServiceKey};

use crate::maps::{SERVICES, SOCK_REVNAT};

const ALLOW: i32 = 1;
const REJECT: i32 = 0;
const ECONNREFUSED: i32 = 111;

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx, false)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx)
}

#[inline(always)]
fn translate(ctx: &SockAddrContext, connect: bool) -> i32 {
    let sa = ctx.sock_addr;
    let (vip, port, proto) =
        unsafe { ((*sa).user_ip4, (*sa).user_port as u16, (*sa).protocol as u8) };
    let mut key = ServiceKey {
        vip,
        port,
        proto,
        _pad: 0,
        slot: 0,
        _pad2: 0,
    };
    let Some(svc) = (unsafe { SERVICES.get(key) }) else {
        return ALLOW; // not a service address
    };
    let count = svc.count;
    if count == 0 {
        // A service without ready backends refuses the connection, as kube-proxy does.
        if connect {
            unsafe { bpf_set_retval(-ECONNREFUSED) };
        }
        return REJECT;
    }
    key.slot = (unsafe { bpf_get_prandom_u32() } % count as u32) as u16 + 1;
    let Some(backend) = (unsafe { SERVICES.get(key) }) else {
        return ALLOW;
    };
    let (backend_ip, backend_port) = (backend.backend_ip, backend.backend_port);
    unsafe {
        (*sa).user_ip4 = backend_ip;
        (*sa).user_port = backend_port as u32;
    }
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut _) };
    let rkey = RevNatKey {
        cookie,
        backend_ip,
        backend_port,
        _pad: 0,
    };
    let _ = SOCK_REVNAT.insert(rkey, RevNatValue { vip, port, _pad: 0 }, 0);
    ALLOW
}

#[inline(always)]
fn reverse(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let cookie = unsafe { bpf_get_socket_cookie(sa as *mut _) };
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    let key = RevNatKey {
        cookie,
        backend_ip: ip,
        backend_port: port,
        _pad: 0,
    };
    if let Some(v) = unsafe { SOCK_REVNAT.get(key) } {
        let (vip, vport) = (v.vip, v.port);
        unsafe {
            (*sa).user_ip4 = vip;
            (*sa).user_port = vport as u32;
        }
    }
    ALLOW
}
