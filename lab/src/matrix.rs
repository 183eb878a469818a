//! The connectivity matrix: every ordered pair of pods × ports, predicted from the resolved
//! policy state (the same map the datapath looks up) and, when asked, probed with real traffic
//! from inside each source pod's network namespace. A cell where the two disagree is a bug.
//!
//! A probe passes when the traffic reaches the destination pod: a TCP handshake completes or is
//! refused (RST: nothing listens, but the policy let the SYN through), a UDP datagram gets an
//! answer or a port-unreachable. Sockets are
//! made on a thread that entered the source pod's namespace (they stay there) and then driven
//! by the runtime, so every probe of the matrix runs at once and a dropped one costs one
//! timeout, not one per cell.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::PathBuf,
    time::Duration,
};

use enforcer::policy::resolve::{Direction, Verdict};
use model::{Matrix, MatrixCell, MatrixPort, MatrixRequest};
use web::api::ApiError;

use crate::{cluster::Protocol, control::Lab};

/// The most pods a matrix covers (the cells grow with the square).
pub const MAX_PODS: usize = 64;
/// How long a TCP handshake may take (the kernel resends a lost SYN after one second).
const TCP_TIMEOUT: Duration = Duration::from_millis(1500);
/// UDP: how many datagrams, and how long to wait for an answer to each.
const UDP_TRIES: u32 = 3;
const UDP_WAIT: Duration = Duration::from_millis(500);

/// A pod as the matrix needs it.
struct MatrixPod {
    name: String,
    ip: Ipv4Addr,
    ep_id: u32,
    identity: u32,
    netns: PathBuf,
}

/// Predicts (and with `req.probe`, probes) the matrix.
pub async fn matrix(lab: &Lab, req: &MatrixRequest) -> Result<Matrix, ApiError> {
    let (pods, ports) = {
        let pods = lab.pods.read().expect("pods");
        let mut chosen: Vec<MatrixPod> = pods
            .values()
            .filter(|p| req.namespaces.is_empty() || req.namespaces.contains(&p.spec.namespace))
            .map(|p| MatrixPod {
                name: format!("{}/{}", p.spec.namespace, p.spec.name),
                ip: p.ip,
                ep_id: p.ep_id,
                identity: p.identity,
                netns: PathBuf::from("/run/netns").join(&p.netns),
            })
            .collect();
        chosen.sort_by(|a, b| a.name.cmp(&b.name));
        let mut ports = req.ports.clone();
        if ports.is_empty() {
            for p in pods
                .values()
                .filter(|p| req.namespaces.is_empty() || req.namespaces.contains(&p.spec.namespace))
            {
                for (_, port, proto) in &p.spec.container.ports {
                    ports.push(MatrixPort {
                        protocol: proto.name().into(),
                        port: *port,
                    });
                }
            }
        }
        ports.sort();
        ports.dedup();
        (chosen, ports)
    };
    if pods.is_empty() {
        return Err(ApiError::new(
            400,
            "no pods to put in the matrix (check the namespaces given)",
        ));
    }
    if pods.len() > MAX_PODS {
        return Err(ApiError::new(
            400,
            format!(
                "{} pods make a matrix of {} pairs; pick at most {MAX_PODS} pods with --namespace",
                pods.len(),
                pods.len() * pods.len()
            ),
        ));
    }
    if ports.is_empty() {
        return Err(ApiError::new(
            400,
            "the pods declare no container ports; name the ports with --port TCP/80",
        ));
    }
    let mut out = Matrix {
        pods: pods.iter().map(|p| p.name.clone()).collect(),
        ports: ports.clone(),
        ..Default::default()
    };
    let audit_all = crate::policies::audit_all(lab);
    {
        let engine = lab.engine.lock().expect("engine");
        let resolved = engine.resolved();
        let table = engine.rule_table();
        let says = |ep: u32, dir: Direction, (verdict, rule): (Verdict, u32)| -> Option<String> {
            let word = match verdict {
                Verdict::Deny => "denied",
                Verdict::Redirect => "to the L7 proxy",
                _ => "allowed",
            };
            if rule != 0 {
                let r = table.get(rule as usize)?;
                let ns = r
                    .namespace
                    .as_deref()
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default();
                return Some(format!(
                    "{word} by {} {ns}{} {}",
                    r.kind,
                    r.policy,
                    enforcer::flow::describe_rule(r)
                ));
            }
            let mut pols: Vec<String> = resolved
                .enforcers
                .get(&(ep, dir.code()))?
                .iter()
                .filter_map(|r| table.get(*r as usize))
                .map(|r| r.policy.clone())
                .collect();
            pols.dedup();
            (verdict == Verdict::Deny)
                .then(|| format!("default deny (selected by {})", pols.join(", ")))
        };
        for (fi, from) in pods.iter().enumerate() {
            for (ti, to) in pods.iter().enumerate() {
                for (pi, port) in ports.iter().enumerate() {
                    let proto = proto_number(&port.protocol);
                    let eg = resolved.decide(
                        from.ep_id,
                        to.identity,
                        Direction::Egress,
                        proto,
                        port.port,
                    );
                    let ing = resolved.decide(
                        to.ep_id,
                        from.identity,
                        Direction::Ingress,
                        proto,
                        port.port,
                    );
                    // A pod talking to itself never leaves its namespace: no policy applies.
                    let predicted =
                        fi == ti || audit_all || (eg.0 != Verdict::Deny && ing.0 != Verdict::Deny);
                    out.cells.push(MatrixCell {
                        from: fi,
                        to: ti,
                        port: pi,
                        predicted,
                        probed: None,
                        egress: says(from.ep_id, Direction::Egress, eg),
                        ingress: says(to.ep_id, Direction::Ingress, ing),
                    });
                }
            }
        }
    }
    if req.probe {
        // Every cell once; then the cells whose probe disagrees with the prediction once more,
        // with more patience, so an answer slowed by a loaded machine is not reported as a bug
        // (a real disagreement repeats).
        let all: Vec<usize> = (0..out.cells.len()).collect();
        probe_cells(&mut out, &pods, &ports, &all, Patience::Normal).await?;
        let again: Vec<usize> = (0..out.cells.len())
            .filter(|&i| out.cells[i].probed != Some(out.cells[i].predicted))
            .collect();
        if !again.is_empty() {
            probe_cells(&mut out, &pods, &ports, &again, Patience::Long).await?;
        }
        out.disagreements = out
            .cells
            .iter()
            .filter(|c| c.probed.is_some_and(|p| p != c.predicted))
            .count();
    }
    Ok(out)
}

#[derive(Clone, Copy)]
enum Patience {
    Normal,
    Long,
}

/// Probes the cells at `indexes` (grouped by source pod, all at once) and records the results.
async fn probe_cells(
    out: &mut Matrix,
    pods: &[MatrixPod],
    ports: &[MatrixPort],
    indexes: &[usize],
    patience: Patience,
) -> Result<(), ApiError> {
    let mut by_source: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in indexes {
        let from = out.cells[i].from;
        match by_source.iter_mut().find(|(f, _)| *f == from) {
            Some((_, cells)) => cells.push(i),
            None => by_source.push((from, vec![i])),
        }
    }
    let tasks = by_source.iter().map(|(from, cells)| {
        let targets = cells
            .iter()
            .map(|&i| {
                let c = &out.cells[i];
                let p = &ports[c.port];
                (
                    SocketAddr::V4(SocketAddrV4::new(pods[c.to].ip, p.port)),
                    p.protocol == "UDP",
                )
            })
            .collect();
        probe_from(pods[*from].netns.clone(), targets, patience)
    });
    let results = futures::future::join_all(tasks).await;
    for ((from, cells), result) in by_source.iter().zip(results) {
        let passed = result
            .map_err(|e| ApiError::new(500, format!("probing from {}: {e}", pods[*from].name)))?;
        for (&i, ok) in cells.iter().zip(passed) {
            out.cells[i].probed = Some(ok);
        }
    }
    Ok(())
}

fn proto_number(name: &str) -> u8 {
    if name == "UDP" {
        Protocol::Udp.number()
    } else {
        Protocol::Tcp.number()
    }
}

enum ProbeSocket {
    Tcp(tokio::net::TcpSocket),
    Udp(std::net::UdpSocket),
}

/// Probes every target from the network namespace at `netns`; true where the traffic passed.
async fn probe_from(
    netns: PathBuf,
    targets: Vec<(SocketAddr, bool)>,
    patience: Patience,
) -> std::io::Result<Vec<bool>> {
    let (tcp_timeout, udp_tries) = match patience {
        Patience::Normal => (TCP_TIMEOUT, UDP_TRIES),
        Patience::Long => (TCP_TIMEOUT * 3, UDP_TRIES * 3),
    };
    let udp: Vec<bool> = targets.iter().map(|t| t.1).collect();
    let sockets = netns::run_in(&netns, move || -> std::io::Result<Vec<ProbeSocket>> {
        udp.into_iter()
            .map(|is_udp| {
                if is_udp {
                    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
                    s.set_nonblocking(true)?;
                    Ok(ProbeSocket::Udp(s))
                } else {
                    Ok(ProbeSocket::Tcp(tokio::net::TcpSocket::new_v4()?))
                }
            })
            .collect()
    })??;
    let probes = sockets
        .into_iter()
        .zip(targets)
        .map(|(socket, (addr, _))| async move {
            let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
            match socket {
                // A refusal (RST) also means the policy let the SYN through.
                ProbeSocket::Tcp(s) => {
                    match tokio::time::timeout(tcp_timeout, s.connect(addr)).await {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => refused(&e),
                        Err(_) => false,
                    }
                }
                ProbeSocket::Udp(s) => {
                    // Connected, so an ICMP port-unreachable comes back as a refusal.
                    let Ok(s) = tokio::net::UdpSocket::from_std(s) else {
                        return false;
                    };
                    if s.connect(addr).await.is_err() {
                        return false;
                    }
                    let mut buf = [0u8; 512];
                    for _ in 0..udp_tries {
                        match s.send(b"hostname").await {
                            Ok(_) => {}
                            Err(e) => return refused(&e),
                        }
                        match tokio::time::timeout(UDP_WAIT, s.recv(&mut buf)).await {
                            Ok(Ok(_)) => return true,
                            Ok(Err(e)) => return refused(&e),
                            Err(_) => {}
                        }
                    }
                    false
                }
            }
        });
    Ok(futures::future::join_all(probes).await)
}
