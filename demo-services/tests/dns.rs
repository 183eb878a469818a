//! The cluster DNS server over real UDP and TCP sockets, including reloading its records.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use demo_services::dns::{self, Config, RecordEntry, RecordsFile};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::common::eventually;

/// Replaces the file the way the orchestrator does: write a temporary file, then rename.
fn write_records(path: &Path, entries: &[(&str, [u8; 4])]) {
    let file = RecordsFile {
        records: entries
            .iter()
            .map(|(name, ip)| RecordEntry {
                name: name.to_string(),
                ipv4: vec![Ipv4Addr::from(*ip)],
            })
            .collect(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&file).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Server {
    udp: SocketAddr,
    tcp: SocketAddr,
}

async fn start(records: &Path) -> Server {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server {
        udp: udp.local_addr().unwrap(),
        tcp: tcp.local_addr().unwrap(),
    };
    let cfg = Config {
        listen: server.udp,
        records_file: records.to_path_buf(),
        reload_ms: 50,
    };
    tokio::spawn(dns::serve(udp, tcp, cfg));
    server
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    q
}

async fn ask_udp(server: SocketAddr, q: &Message) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(crate::common::PATIENCE, sock.recv_from(&mut buf))
        .await
        .expect("a DNS answer")
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, q.metadata.id);
    reply
}

async fn ask_tcp(server: SocketAddr, queries: &[Message]) -> Vec<Message> {
    // Several questions on one connection, as resolvers do.
    let mut stream = TcpStream::connect(server).await.unwrap();
    let mut replies = Vec::new();
    for q in queries {
        let bytes = q.to_vec().unwrap();
        stream.write_u16(bytes.len() as u16).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        let reply = Message::from_vec(&buf).unwrap();
        assert_eq!(reply.metadata.id, q.metadata.id);
        replies.push(reply);
    }
    replies
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.json");
    write_records(
        &records,
        &[("deathstar.default.svc.cluster.local", [10, 96, 0, 20])],
    );
    let server = start(&records).await;

    let known = query("DeathStar.default.svc.cluster.local.", RecordType::A);
    let aaaa = query("deathstar.default.svc.cluster.local.", RecordType::AAAA);
    let unknown = query("xwing.default.svc.cluster.local.", RecordType::A);
    let outside = query("deathstar.example.com.", RecordType::A);

    let udp = [
        ask_udp(server.udp, &known).await,
        ask_udp(server.udp, &aaaa).await,
        ask_udp(server.udp, &unknown).await,
        ask_udp(server.udp, &outside).await,
    ];
    let tcp = ask_tcp(server.tcp, &[known, aaaa, unknown, outside]).await;
    for replies in [udp.as_slice(), tcp.as_slice()] {
        let [known, aaaa, unknown, outside] = replies else {
            panic!()
        };
        assert_eq!(known.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_records(known), vec![Ipv4Addr::new(10, 96, 0, 20)]);
        assert_eq!(known.answers[0].ttl, 5);
        // The question comes back as asked, case included.
        assert_eq!(
            known.queries[0].name().to_ascii(),
            "DeathStar.default.svc.cluster.local."
        );
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.json");
    // The server starts before the orchestrator wrote anything.
    let server = start(&records).await;
    let q = query("deathstar.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        ask_udp(server.udp, &q).await.metadata.response_code,
        ResponseCode::NXDomain
    );

    write_records(
        &records,
        &[("deathstar.default.svc.cluster.local", [10, 96, 0, 20])],
    );
    eventually("the first records", || async {
        (a_records(&ask_udp(server.udp, &q).await) == [Ipv4Addr::new(10, 96, 0, 20)]).then_some(())
    })
    .await;

    write_records(
        &records,
        &[
            ("deathstar.default.svc.cluster.local", [10, 96, 0, 21]),
            ("xwing.default.svc.cluster.local", [10, 96, 0, 30]),
        ],
    );
    eventually("the replaced records", || async {
        (a_records(&ask_udp(server.udp, &q).await) == [Ipv4Addr::new(10, 96, 0, 21)]).then_some(())
    })
    .await;
    let x = ask_tcp(
        server.tcp,
        &[query("xwing.default.svc.cluster.local.", RecordType::A)],
    )
    .await;
    assert_eq!(a_records(&x[0]), vec![Ipv4Addr::new(10, 96, 0, 30)]);

    // A broken file keeps the last good records.
    std::fs::write(dir.path().join("bad.tmp"), "{ not json").unwrap();
    std::fs::rename(dir.path().join("bad.tmp"), &records).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        a_records(&ask_udp(server.udp, &q).await),
        vec![Ipv4Addr::new(10, 96, 0, 21)]
    );
}
