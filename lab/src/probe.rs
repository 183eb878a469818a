//! Readiness: whether a pod listens on a port, asked of the kernel through `sock_diag` on a
//! netlink socket opened inside the pod's network namespace (so it sees that namespace's
//! sockets only).
//!
//! Why not `/proc/PID/net/tcp`: reading it walks the kernel's whole established-connection
//! table (one table for all namespaces, sized to the machine's memory) to pick out the pod's
//! few sockets. Probing every pod four times a second that way cost a core at a few hundred
//! pods; asking only for listening sockets skips that table.

use std::{
    collections::HashMap,
    io,
    path::Path,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::cluster::Protocol;

/// How long a port found listening is taken on trust while the same process runs (a process
/// that exits is noticed at once: its pid changes). Kubernetes probes every 10 s by default.
const TRUSTED_FOR: Duration = Duration::from_secs(10);

/// A `sock_diag` socket bound to one pod's network namespace.
pub struct ListenProbe {
    socket: Socket,
    buf: Vec<u8>,
    /// Ports found listening: by which process, and when.
    seen: HashMap<(u16, Protocol), (u32, Instant)>,
}

impl ListenProbe {
    /// Opens the probe inside the namespace at `netns`; it keeps answering for that namespace.
    pub fn open_in(netns: &Path) -> io::Result<Self> {
        let socket = netns::run_in(netns, || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
            socket.bind_auto()?;
            socket.connect(&SocketAddr::new(0, 0))?;
            Ok(socket)
        })??;
        Ok(Self {
            socket,
            buf: vec![0; 16 * 1024],
            seen: HashMap::new(),
        })
    }

    /// Whether process `pid` (the pod's) listens on `port`: asked of the kernel until it does,
    /// then again only when the process changed or [`TRUSTED_FOR`] has passed, so that a
    /// thousand ready pods cost next to nothing.
    pub fn ready(&mut self, pid: u32, port: u16, proto: Protocol) -> io::Result<bool> {
        if let Some((seen_pid, at)) = self.seen.get(&(port, proto))
            && *seen_pid == pid
            && at.elapsed() < TRUSTED_FOR
        {
            return Ok(true);
        }
        let listening = self.listening(port, proto)?;
        if listening {
            self.seen.insert((port, proto), (pid, Instant::now()));
        } else {
            self.seen.remove(&(port, proto));
        }
        Ok(listening)
    }

    /// Whether a socket listens on `port` (TCP), or is bound to it (UDP), on any address.
    pub fn listening(&mut self, port: u16, proto: Protocol) -> io::Result<bool> {
        let (protocol, states) = match proto {
            Protocol::Tcp => (IPPROTO_TCP, StateFlags::LISTEN),
            // A bound UDP socket is in the "closed" state.
            Protocol::Udp => (IPPROTO_UDP, StateFlags::CLOSE),
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: AF_INET,
                protocol,
                extensions: ExtensionFlags::empty(),
                states,
                socket_id: SocketId::new_v4(),
            })
            .into(),
        );
        request.finalize();
        let mut out = vec![0; request.buffer_len()];
        request.serialize(&mut out);
        self.socket.send(&out, 0)?;
        let mut found = false;
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|e| io::Error::other(format!("sock_diag answer: {e}")))?;
                match message.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        found |= r.header.socket_id.source_port == port;
                    }
                    NetlinkPayload::Done(_) => return Ok(found),
                    NetlinkPayload::Error(e) => return Err(io::Error::other(format!("{e:?}"))),
                    _ => {}
                }
                let len = message.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe of the test's own namespace, or `None` without the privilege to enter one
    /// (the integration tests cover the rest then).
    fn own_namespace_probe() -> Option<ListenProbe> {
        let probe = ListenProbe::open_in(Path::new("/proc/self/ns/net")).ok();
        assert!(
            probe.is_some() || !nix::unistd::Uid::effective().is_root(),
            "root can open a probe"
        );
        probe
    }

    /// In the test's own namespace: a port is seen once something listens on it, and not
    /// after it closes.
    #[test]
    fn sees_a_listener_come_and_go() {
        let Some(mut probe) = own_namespace_probe() else {
            return;
        };
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert!(probe.listening(port, Protocol::Tcp).unwrap());
        drop(tcp);
        assert!(!probe.listening(port, Protocol::Tcp).unwrap());
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert!(probe.listening(port, Protocol::Udp).unwrap());
        assert!(!probe.listening(port, Protocol::Tcp).unwrap());
    }

    /// A ready port is trusted while the same process runs; another process is asked anew.
    #[test]
    fn readiness_is_trusted_for_the_same_process_only() {
        let Some(mut probe) = own_namespace_probe() else {
            return;
        };
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        assert!(probe.ready(1, port, Protocol::Tcp).unwrap());
        drop(tcp);
        assert!(probe.ready(1, port, Protocol::Tcp).unwrap(), "trusted");
        assert!(!probe.ready(2, port, Protocol::Tcp).unwrap(), "asked anew");
    }
}
