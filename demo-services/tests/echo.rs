//! The echo server: fixed body by default, the request itself on demand, keep-alive.

use demo_services::echo::{self, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{loopback_listener, parse_response, raw_http};

async fn start(cfg: Config) -> std::net::SocketAddr {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(echo::serve(listener, cfg));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_path_and_method_get_hello_world() {
    let addr = start(Config::default()).await;
    for (method, path) in [("GET", "/"), ("POST", "/anything?x=1"), ("DELETE", "/v1")] {
        let r = raw_http(addr, method, path, "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello world\n"));
    }
    let custom = start(Config {
        body: "pong".into(),
        ..Config::default()
    })
    .await;
    assert_eq!(raw_http(custom, "GET", "/", "").await.body, "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_request_shows_method_path_and_headers() {
    let addr = start(Config {
        echo_request: true,
        ..Config::default()
    })
    .await;
    let r = raw_http(addr, "PATCH", "/some/path?q=2", "").await;
    assert_eq!(r.status, 200);
    let mut lines = r.body.lines();
    assert_eq!(lines.next(), Some("PATCH /some/path?q=2 HTTP/1.1"));
    assert!(r.body.contains(&format!("host: {addr}\n")), "{}", r.body);
    assert!(r.body.contains("connection: close\n"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_kept_alive() {
    let addr = start(Config::default()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        // Read until one whole answer is in: header plus the 12-byte body.
        while !got.ends_with("hello world\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed a kept-alive connection");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let r = parse_response(&got);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("12"));
    }
}
