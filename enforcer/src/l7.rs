//! The L7 proxy wired into the lab: a transparent listener in the node namespace that the
//! datapath hands connections to (`bpf_sk_assign`), a [`Judge`] that applies the resolved HTTP
//! rules of both ends (the client's egress and the server's ingress), and a [`Connector`] that
//! opens the upstream connection with the client's own address (transparent) and the
//! `MARK_FROM_PROXY` mark, so the datapath lets it through as already judged.
//!
//! The proxy runs on its own runtime whose threads live in the node namespace: every socket it
//! creates (listener and upstreams) belongs there.

use std::{
    collections::BTreeSet,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsFd,
    path::Path,
    sync::Arc,
};

use enforcer_common::MARK_FROM_PROXY;
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::{TcpSocket, TcpStream};

use crate::{
    engine::{Names, SharedNames},
    policy::resolve::{Direction, MapKey},
    proxy::{
        BoxFuture, ConnMeta, Connector, Judge, Observer, ProxyConfig, ProxyStats, RequestHead,
        Verdict, serve_listener,
    },
};

/// Judges requests with the engine's current resolved HTTP rules.
pub struct EngineJudge {
    pub names: SharedNames,
}

/// Which rule sets apply to a connection, from the names snapshot: the server's ingress rules
/// for the client's identity, and the client's egress rules for the server's identity.
fn applicable<'a>(
    names: &'a Names,
    conn: &ConnMeta,
) -> Vec<(&'static str, MapKey, &'a Arc<crate::proxy::CompiledRules>)> {
    let (client, server, port) = (
        *conn.client.ip(),
        *conn.original_dst.ip(),
        conn.original_dst.port(),
    );
    let client_id = names.identity_of(client);
    let server_id = names.identity_of(server);
    let mut out = Vec::new();
    if let Some(ep) = names.endpoint_by_ip(server) {
        let key = MapKey::exact(ep, client_id, Direction::Ingress, 6, port);
        if let Some((key, r)) = rules_for(names, key) {
            out.push(("ingress", key, r));
        }
    }
    if let Some(ep) = names.endpoint_by_ip(client) {
        let key = MapKey::exact(ep, server_id, Direction::Egress, 6, port);
        if let Some((key, r)) = rules_for(names, key) {
            out.push(("egress", key, r));
        }
    }
    out
}

/// The HTTP rules of the entry the kernel's longest-prefix match picks for `exact`: rules on a
/// port range are stored under the range's blocks, so the lookup walks the (at most 18) keys
/// covering the exact one, most specific first, and stops at an entry that is not a redirect.
fn rules_for(names: &Names, exact: MapKey) -> Option<(MapKey, &Arc<crate::proxy::CompiledRules>)> {
    exact
        .covering()
        .take_while(|k| !names.l7_shadowed.contains(k))
        .find_map(|k| names.l7.get(&k).map(|r| (k, r)))
}

impl Judge for EngineJudge {
    fn judge(&self, conn: &ConnMeta, req: &RequestHead) -> Verdict {
        let names = self.names.read().expect("names lock").clone();
        let sets = applicable(&names, conn);
        // No HTTP rules apply any more (a policy changed since the connection was steered):
        // the kernel's L3/L4 verdict, checked on every packet, already allowed it.
        let mut rule = 0;
        for (dir, key, rules) in sets {
            match rules.judge(req) {
                Some(r) => rule = r,
                None => {
                    let policies: BTreeSet<String> = names
                        .http
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter_map(|h| names.rules.get(h.rule_ref as usize))
                        .map(|r| r.policy.clone())
                        .collect();
                    let who = names
                        .endpoint_by_ip(if dir == "ingress" {
                            *conn.original_dst.ip()
                        } else {
                            *conn.client.ip()
                        })
                        .and_then(|id| names.endpoints_by_id.get(&id))
                        .map(|e| format!("{}/{}", e.namespace, e.pod))
                        .unwrap_or_default();
                    return Verdict::Deny {
                        policy_hint: format!(
                            "no HTTP rule of policy {} ({dir} of {who}) allows {} {}",
                            policies.into_iter().collect::<Vec<_>>().join(", "),
                            req.method,
                            req.target
                        ),
                    };
                }
            }
        }
        Verdict::Allow { rule }
    }
}

/// Opens upstream connections as the client (transparent bind to its address) and marked as
/// coming from the proxy.
pub struct TransparentConnector;

impl Connector for TransparentConnector {
    fn connect(&self, conn: &ConnMeta) -> BoxFuture<'static, io::Result<TcpStream>> {
        let (client, dst) = (*conn.client.ip(), conn.original_dst);
        Box::pin(async move {
            let sock = TcpSocket::new_v4()?;
            setsockopt(&sock.as_fd(), sockopt::IpTransparent, &true).map_err(io::Error::from)?;
            setsockopt(&sock.as_fd(), sockopt::Mark, &MARK_FROM_PROXY).map_err(io::Error::from)?;
            sock.bind(SocketAddr::V4(SocketAddrV4::new(client, 0)))?;
            sock.connect(SocketAddr::V4(dst)).await
        })
    }
}

/// The running proxy. Dropping it stops it, as [`ProxyHandle::stop`] does.
pub struct ProxyHandle {
    /// Always `Some` until dropped: taken out so that it is shut down without blocking, which
    /// dropping a runtime inside another one's async context would do (and panic).
    runtime: Option<tokio::runtime::Runtime>,
    pub stats: Arc<ProxyStats>,
    pub port: u16,
}

impl ProxyHandle {
    /// Stops accepting and drops every proxied connection (clients see resets). Until a new
    /// proxy listens, the datapath drops what it would steer here: the L7 port stays closed.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts the proxy on `port` in the node namespace at `node_ns`.
pub fn start(
    node_ns: &Path,
    port: u16,
    names: SharedNames,
    observer: Arc<dyn Observer>,
    stats: Arc<ProxyStats>,
) -> io::Result<ProxyHandle> {
    let ns = Arc::new(std::fs::File::open(node_ns)?);
    let ns_thread = ns.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("l7-proxy")
        .enable_all()
        .on_thread_start(move || {
            // Every proxy thread lives in the node namespace, so its sockets do too.
            if let Err(e) = netns::enter(ns_thread.as_fd()) {
                tracing::error!("proxy thread could not enter the node namespace: {e}");
            }
        })
        .build()?;
    // The listener is created on a runtime thread (in the node namespace).
    let listener = runtime.block_on(async move {
        tokio::spawn(async move {
            let sock = TcpSocket::new_v4()?;
            setsockopt(&sock.as_fd(), sockopt::IpTransparent, &true).map_err(io::Error::from)?;
            sock.set_reuseaddr(true)?;
            sock.bind(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                port,
            )))?;
            // A deep backlog: bursts of thousands of connects otherwise wait for SYN retries.
            sock.listen(4096)
        })
        .await
        .map_err(io::Error::other)?
    })?;
    let judge: Arc<dyn Judge> = Arc::new(EngineJudge { names });
    let cfg = Arc::new(ProxyConfig::default());
    runtime.spawn(serve_listener(
        listener,
        |s: &TcpStream| match s.local_addr()? {
            // Transparent: the accepted socket's local address is where the client connected.
            SocketAddr::V4(a) => Ok(a),
            SocketAddr::V6(a) => Err(io::Error::other(format!("unexpected IPv6 destination {a}"))),
        },
        judge,
        Arc::new(TransparentConnector),
        observer,
        stats.clone(),
        cfg,
    ));
    Ok(ProxyHandle {
        runtime: Some(runtime),
        stats,
        port,
    })
}
