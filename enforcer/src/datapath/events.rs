//! The kernel programs' flow events, decoded: the ring buffer is read here (the datapath is the
//! only module that touches BPF), and each record becomes an [`Event`] in host byte order with
//! a wall-clock time. Naming the event with pods and rules is the flow module's job.

use std::{
    net::Ipv4Addr,
    time::{Duration, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use enforcer_common::FlowEvent;
use tokio::io::unix::AsyncFd;

/// One packet decision of the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub time: SystemTime,
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// TCP flags byte (FIN=1, SYN=2, RST=4, PSH=8, ACK=16, URG=32).
    pub tcp_flags: u8,
    /// `DIR_INGRESS` / `DIR_EGRESS`, relative to `ep_id`.
    pub direction: u8,
    /// `FLOW_*`.
    pub verdict: u8,
    /// `DROP_*`, or `DROP_NONE`.
    pub drop_reason: u8,
    pub is_reply: bool,
    /// `OBS_*`.
    pub obs_point: u8,
    /// The endpoint whose policy decided (0: none).
    pub ep_id: u32,
    pub src_identity: u32,
    pub dst_identity: u32,
    /// The rule that decided (0: none, i.e. default deny or no policy).
    pub rule_ref: u32,
    pub ifindex: u32,
    pub len: u32,
    /// `CT_*` flags of the connection.
    pub ct_flags: u32,
    /// The rule of the would-be verdict (audit mode included), 0 if none.
    pub audit_rule_ref: u32,
    /// ICMP type and code (`proto` 1), else 0.
    pub icmp_type: u8,
    pub icmp_code: u8,
}

impl Event {
    /// Decodes a kernel record (addresses and ports in network order, monotonic time).
    pub fn decode(raw: &FlowEvent, clock: &Clock) -> Self {
        Self {
            time: clock.wall(raw.ts_ns),
            saddr: Ipv4Addr::from(u32::from_be(raw.saddr)),
            daddr: Ipv4Addr::from(u32::from_be(raw.daddr)),
            sport: u16::from_be(raw.sport),
            dport: u16::from_be(raw.dport),
            proto: raw.proto,
            tcp_flags: raw.tcp_flags,
            direction: raw.direction,
            verdict: raw.verdict,
            drop_reason: raw.drop_reason,
            is_reply: raw.is_reply != 0,
            obs_point: raw.obs_point,
            ep_id: raw.ep_id,
            src_identity: raw.src_identity,
            dst_identity: raw.dst_identity,
            rule_ref: raw.rule_ref,
            ifindex: raw.ifindex,
            len: raw.len,
            ct_flags: raw.ct_flags,
            audit_rule_ref: raw.audit_rule_ref,
            icmp_type: raw.icmp_type,
            icmp_code: raw.icmp_code,
        }
    }

    /// Decodes a ring-buffer record; `None` if it is too short to be a [`FlowEvent`].
    pub fn from_bytes(bytes: &[u8], clock: &Clock) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<FlowEvent>() {
            return None;
        }
        // SAFETY: the length is checked, FlowEvent is plain old data of that size, and the
        // read is unaligned-safe.
        let raw: FlowEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(Self::decode(&raw, clock))
    }
}

/// Converts monotonic `bpf_ktime_get_ns` readings to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mono = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            offset_ns: wall - mono,
        }
    }

    /// A clock with a fixed offset from monotonic to wall-clock time (for tests).
    pub fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The flow-event ring buffer: [`Self::drain`] takes what the kernel has written so far;
/// [`Self::into_async`] makes a reader that waits for more.
pub struct EventReader {
    ring: RingBuf<MapData>,
    clock: Clock,
}

impl EventReader {
    pub(super) fn new(ring: RingBuf<MapData>) -> Self {
        Self {
            ring,
            clock: Clock::new(),
        }
    }

    /// Appends every event that is ready to `out`, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        drain(&mut self.ring, &self.clock, out);
    }

    /// A reader for async code (needs a tokio runtime).
    pub fn into_async(self) -> std::io::Result<AsyncEventReader> {
        // SAFETY: the ring buffer owns its file descriptor, and the AsyncFd owns the ring
        // buffer, so the descriptor stays open exactly as long as it is registered.
        let ring = unsafe { AsyncFd::register(self.ring) }?;
        Ok(AsyncEventReader {
            ring,
            clock: self.clock,
        })
    }
}

fn drain(ring: &mut RingBuf<MapData>, clock: &Clock, out: &mut Vec<Event>) {
    while let Some(item) = ring.next() {
        if let Some(ev) = Event::from_bytes(&item, clock) {
            out.push(ev);
        }
    }
}

/// The flow-event ring buffer, read from async code.
pub struct AsyncEventReader {
    ring: AsyncFd<RingBuf<MapData>>,
    clock: Clock,
}

impl AsyncEventReader {
    /// Waits for events and appends all that are ready to `out`.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        drain(guard.get_inner_mut(), &self.clock, out);
        guard.clear_ready();
        Ok(())
    }
}
