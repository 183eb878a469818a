//! The cluster's authoritative DNS server for `cluster.local.`, over UDP and TCP.
//!
//! Names and addresses come from a JSON records file that the orchestrator replaces atomically
//! (write, then rename) whenever services change; the server polls its identity (inode, size,
//! mtime) and swaps in the new zone without stopping queries. A file that fails to parse leaves
//! the previous zone in place.
//!
//! Answers: A for a known name (TTL 5, name matching ignores case); NOERROR with no answer for
//! other types of a known name and for names that only have names below them; NXDOMAIN for
//! unknown names under `cluster.local.`; REFUSED for everything else (the lab has no internet).
//! Negative answers carry the zone's SOA so resolvers cache them only briefly.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The zone this server is authoritative for (lowercase, no trailing dot).
pub const ZONE: &str = "cluster.local";
/// Short, so that a policy or service change shows up in the pods within seconds.
pub const TTL: u32 = 5;
/// Plain DNS over UDP without EDNS carries at most this many bytes.
const UDP_PLAIN_MAX: usize = 512;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Both the UDP and the TCP socket bind this address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub records_file: PathBuf,
    /// How often the records file is checked for a change.
    #[serde(default = "default_reload_ms")]
    pub reload_ms: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 53))
}
fn default_reload_ms() -> u64 {
    500
}

/// The records file as the orchestrator writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordsFile {
    pub records: Vec<RecordEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntry {
    /// e.g. "deathstar.default.svc.cluster.local" (a trailing dot is allowed).
    pub name: String,
    #[serde(default)]
    pub ipv4: Vec<Ipv4Addr>,
}

/// The names the server answers for, keyed by lowercase name without the trailing dot.
#[derive(Debug, Default)]
pub struct Zone {
    addrs: HashMap<String, Vec<Ipv4Addr>>,
    /// Ancestors of known names (e.g. "svc.cluster.local"): they exist, with no records.
    ancestors: HashSet<String>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn in_zone(name: &str) -> bool {
    name == ZONE || name.ends_with(&format!(".{ZONE}"))
}

impl Zone {
    pub fn new(file: &RecordsFile) -> Zone {
        let mut zone = Zone::default();
        for entry in &file.records {
            let name = normalize(&entry.name);
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                zone.ancestors.insert(parent.to_string());
                rest = parent;
            }
            zone.addrs
                .entry(name)
                .or_default()
                .extend(entry.ipv4.iter().copied());
        }
        zone
    }

    /// The addresses of `name` (any case, trailing dot or not).
    pub fn lookup(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.addrs.get(&normalize(name)).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// Why a records file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub fn load_zone(path: &Path) -> Result<Zone, LoadError> {
    let text = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file: RecordsFile = serde_json::from_slice(&text).map_err(|source| LoadError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Zone::new(&file))
}

/// How a message arrived; UDP answers must fit the client's buffer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers one DNS message. `None` means send nothing (not a query, or too short to answer).
/// UDP answers longer than the client accepts are truncated (TC set) so it retries over TCP.
pub fn answer(zone: &Zone, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let req = match Message::from_vec(request) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "undecodable DNS message");
            // Answer FORMERR if there is at least an id to answer to.
            let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.checking_disabled = req.metadata.checking_disabled;
    resp.metadata.response_code = respond(zone, &req, &mut resp);
    let mut bytes = resp.to_vec().ok()?;
    let limit = match (transport, &req.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => usize::from(edns.max_payload()).max(UDP_PLAIN_MAX),
        (Transport::Udp, None) => UDP_PLAIN_MAX,
    };
    if bytes.len() > limit {
        bytes = resp.truncate().to_vec().ok()?;
    }
    Some(bytes)
}

/// Fills in the question and answer sections and returns the response code.
fn respond(zone: &Zone, req: &Message, resp: &mut Message) -> ResponseCode {
    if req.metadata.op_code != OpCode::Query {
        return ResponseCode::NotImp;
    }
    let [query] = req.queries.as_slice() else {
        return ResponseCode::FormErr;
    };
    resp.add_query(query.clone());
    let name = normalize(&query.name().to_ascii());
    if query.query_class() != DNSClass::IN || !in_zone(&name) {
        return ResponseCode::Refused;
    }
    resp.metadata.authoritative = true;
    match zone.addrs.get(&name) {
        Some(addrs) if query.query_type() == RecordType::A && !addrs.is_empty() => {
            for ip in addrs {
                resp.add_answer(Record::from_rdata(
                    query.name().clone(),
                    TTL,
                    RData::A(A(*ip)),
                ));
            }
            ResponseCode::NoError
        }
        // A known name without records of the asked type.
        Some(_) => {
            resp.add_authority(zone_soa());
            ResponseCode::NoError
        }
        None if zone.ancestors.contains(&name) || name == ZONE => {
            resp.add_authority(zone_soa());
            ResponseCode::NoError
        }
        None => {
            resp.add_authority(zone_soa());
            ResponseCode::NXDomain
        }
    }
}

fn zone_soa() -> Record {
    let origin = Name::from_ascii(format!("{ZONE}.")).expect("the zone name is valid");
    let soa = SOA::new(
        Name::from_ascii(format!("ns.dns.{ZONE}.")).expect("a valid name"),
        Name::from_ascii(format!("hostmaster.{ZONE}.")).expect("a valid name"),
        1,
        60,
        10,
        3600,
        TTL,
    );
    Record::from_rdata(origin, TTL, RData::SOA(soa))
}

/// Binds UDP and TCP on `cfg.listen` and serves until the process dies.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let udp = UdpSocket::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind UDP {}: {e}", cfg.listen))?;
    let tcp = crate::listen::bind(cfg.listen).await?;
    serve(udp, tcp, cfg).await
}

/// Serves on already bound sockets (tests bind port 0).
pub async fn serve(udp: UdpSocket, tcp: TcpListener, cfg: Config) -> anyhow::Result<()> {
    let initial = match load_zone(&cfg.records_file) {
        Ok(zone) => zone,
        Err(e) => {
            tracing::warn!(error = %e, "starting with no records");
            Zone::default()
        }
    };
    tracing::info!(
        udp = %udp.local_addr()?,
        tcp = %tcp.local_addr()?,
        names = initial.len(),
        "DNS server ready"
    );
    let zone = Arc::new(RwLock::new(Arc::new(initial)));
    let reload = tokio::spawn(watch_file(
        cfg.records_file.clone(),
        Duration::from_millis(cfg.reload_ms.max(10)),
        zone.clone(),
    ));
    let tcp_task = tokio::spawn(serve_tcp(tcp, zone.clone()));
    let result = serve_udp(udp, zone).await;
    reload.abort();
    tcp_task.abort();
    result
}

/// The current zone; the lock is held only to clone the pointer.
fn current(zone: &RwLock<Arc<Zone>>) -> Arc<Zone> {
    zone.read().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn serve_udp(socket: UdpSocket, zone: Arc<RwLock<Arc<Zone>>>) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // E.g. an ICMP error from an earlier reply; the socket is still fine.
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let Some(reply) = answer(&current(&zone), &buf[..len], Transport::Udp) else {
            continue;
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::debug!(%peer, error = %e, "UDP send failed");
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<RwLock<Arc<Zone>>>) {
    loop {
        let (stream, peer) = crate::listen::accept(&listener).await;
        let zone = zone.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_conn(stream, &zone).await {
                tracing::debug!(%peer, error = %e, "DNS TCP connection ended");
            }
        });
    }
}

/// DNS over TCP: each message is preceded by its length as two big-endian bytes.
async fn serve_tcp_conn(mut stream: TcpStream, zone: &RwLock<Arc<Zone>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // End of stream or idle: the client is done.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        buf.resize(len, 0);
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow client"))??;
        let Some(reply) = answer(&current(zone), &buf, Transport::Tcp) else {
            continue;
        };
        let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

/// Reloads the zone whenever the records file's identity changes.
async fn watch_file(path: PathBuf, every: Duration, zone: Arc<RwLock<Arc<Zone>>>) {
    // (inode, size, mtime in ns): a rename-replace changes the inode even within one mtime tick.
    let identity = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    };
    let mut seen = identity(&path);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let now = identity(&path);
        if now == seen || now.is_none() {
            continue;
        }
        seen = now;
        match load_zone(&path) {
            Ok(new) => {
                tracing::info!(names = new.len(), "DNS records reloaded");
                *zone.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
            }
            Err(e) => tracing::warn!(error = %e, "keeping the previous DNS records"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn zone() -> Zone {
        Zone::new(&RecordsFile {
            records: vec![RecordEntry {
                name: "Deathstar.default.svc.cluster.local.".into(),
                ipv4: vec![Ipv4Addr::new(10, 96, 0, 20)],
            }],
        })
    }

    fn ask(name: &str, rtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        let reply = answer(&zone(), &q.to_vec().unwrap(), Transport::Udp).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, q.metadata.id);
        reply
    }

    #[test]
    fn known_name_any_case() {
        let r = ask("DEATHSTAR.default.svc.cluster.local.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].ttl, TTL);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 96, 0, 20))));
    }

    #[test]
    fn aaaa_of_known_name_is_empty_noerror() {
        let r = ask("deathstar.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
    }

    #[test]
    fn unknown_in_zone_is_nxdomain_and_outside_is_refused() {
        let r = ask("xwing.default.svc.cluster.local.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1);
        let r = ask("svc.cluster.local.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        let r = ask("example.com.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        let r = ask("notcluster.local.", RecordType::A);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let many = Zone::new(&RecordsFile {
            records: vec![RecordEntry {
                name: "big.default.svc.cluster.local".into(),
                ipv4: (0..100).map(|i| Ipv4Addr::new(10, 96, 1, i)).collect(),
            }],
        });
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("big.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let q = q.to_vec().unwrap();
        let udp = Message::from_vec(&answer(&many, &q, Transport::Udp).unwrap()).unwrap();
        assert!(udp.metadata.truncation);
        assert!(udp.answers.is_empty());
        let tcp = Message::from_vec(&answer(&many, &q, Transport::Tcp).unwrap()).unwrap();
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 100);
    }

    #[test]
    fn garbage_gets_formerr_or_nothing() {
        assert!(answer(&zone(), &[], Transport::Udp).is_none());
        let reply = answer(&zone(), &[0x12, 0x34, 0xff], Transport::Udp).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }
}
