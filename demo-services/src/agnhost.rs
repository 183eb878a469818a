//! The servers of Kubernetes' `agnhost` test image that the network policy conformance suite
//! runs in its pods: `serve-hostname` answers with the pod's name on TCP (written on connect,
//! then closed), on UDP (a datagram back for every datagram) or over HTTP; `netexec` and
//! `porter` answer HTTP. One process serves every port the pod declares.

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, UdpSocket},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writes the body on connect and closes.
    Tcp,
    /// Answers every datagram with the body.
    Udp,
    /// Answers every HTTP request with 200 and the body.
    Http,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub port: u16,
    pub kind: Kind,
    pub body: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub servers: Vec<Server>,
}

/// Binds every server's port and serves until the process dies; fails if a port cannot be bound.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for s in cfg.servers {
        let addr = SocketAddr::from(([0, 0, 0, 0], s.port));
        match s.kind {
            Kind::Tcp => {
                let listener = crate::listen::bind(addr).await?;
                tasks.spawn(serve_tcp(listener, s.body));
            }
            Kind::Udp => {
                let socket = UdpSocket::bind(addr).await?;
                tasks.spawn(serve_udp(socket, s.body));
            }
            Kind::Http => {
                let listener = crate::listen::bind(addr).await?;
                let cfg = crate::echo::Config {
                    listen: addr,
                    body: s.body,
                    echo_request: false,
                };
                tasks.spawn(crate::echo::serve(listener, cfg));
            }
        }
        tracing::info!(port = s.port, kind = ?s.kind, "agnhost server ready");
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn serve_tcp(listener: TcpListener, body: String) -> anyhow::Result<()> {
    let body: Arc<[u8]> = body.into_bytes().into();
    loop {
        let (mut conn, _) = crate::listen::accept(&listener).await;
        let body = body.clone();
        tokio::spawn(async move {
            // The peer may already be gone; nothing to report then.
            let _ = conn.write_all(&body).await;
            let _ = conn.shutdown().await;
        });
    }
}

async fn serve_udp(socket: UdpSocket, body: String) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        // A failed send (the peer's port unreachable) must not end the server.
        let Ok((_, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let _ = socket.send_to(body.as_bytes(), peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn tcp_and_udp_answer_with_the_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener, "a\n".into()));
        let udp_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = udp_socket.local_addr().unwrap();
        tokio::spawn(serve_udp(udp_socket, "b\n".into()));

        let mut got = String::new();
        let mut c = tokio::net::TcpStream::connect(tcp).await.unwrap();
        c.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "a\n");

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hostname", udp).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"b\n");
    }
}
