//! Every kind of outcome of the ships' moves, against real servers on loopback.

use std::collections::BTreeMap;

use demo_services::deathstar::Config;
use demo_services::ftpstore::Mode;
use demo_services::ship::{Move, Options, Outcome, perform};

use crate::common::{
    closed_port, ftp_login, ftp_put, loopback_listener, secure_mode, start_deathstar, start_store,
};

fn opts(base: impl std::fmt::Display, timeout_ms: u64) -> Options {
    Options {
        base_url: format!("http://{base}"),
        timeout_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn land_and_survey_succeed() {
    let ds = start_deathstar(Config::default()).await;
    let o = perform(&Move::Land, &opts(ds, 5000)).await;
    assert!(
        matches!(&o, Outcome::Ok { status: 200, body, .. } if body == "Ship landed\n"),
        "{o:?}"
    );
    assert_eq!(o.summary(), "200 Ship landed");
    assert_eq!(o.exit_code(), 0);

    let o = perform(&Move::Survey, &opts(ds, 5000)).await;
    let Outcome::Ok { status, body, .. } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(*status, 200);
    assert!(body.contains("\"Death Star\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_moves_report_error_statuses() {
    let ds = start_deathstar(Config::default()).await;
    // A relative URL goes to the base; an absolute one anywhere.
    let mv = Move::Http {
        method: "GET".into(),
        url: "/v1/nothing".into(),
        headers: BTreeMap::new(),
        body: None,
    };
    let o = perform(&mv, &opts(ds, 5000)).await;
    assert!(matches!(o, Outcome::HttpError { status: 404, .. }), "{o:?}");
    assert_eq!(o.exit_code(), 1);

    let mv = Move::Http {
        method: "PUT".into(),
        url: format!("http://{ds}/v1/cargobay"),
        headers: [("X-Has-Force".to_string(), "true".to_string())].into(),
        body: Some("supplies".into()),
    };
    let o = perform(&mv, &opts("unused.invalid", 5000)).await;
    assert!(matches!(o, Outcome::Ok { status: 200, .. }), "{o:?}");
}

/// What an L7 policy proxy answers, served by hand to check the rendering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_from_a_proxy_is_an_http_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        s.write_all(
            b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 15\r\n\r\nAccess denied\r\n",
        )
        .await
        .unwrap();
    });
    let o = perform(&Move::Fire, &opts(addr, 5000)).await;
    assert!(
        matches!(&o, Outcome::HttpError { status: 403, body, .. } if body == "Access denied\r\n"),
        "{o:?}"
    );
    assert_eq!(o.summary(), "403 Access denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_refused() {
    let o = perform(&Move::Land, &opts(closed_port(), 5000)).await;
    assert!(matches!(o, Outcome::Refused { .. }), "{o:?}");
    assert_eq!(o.exit_code(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out() {
    // Accepts (the kernel completes the handshake) and never answers, like a dropped reply.
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    let o = perform(&Move::Land, &opts(addr, 300)).await;
    assert!(matches!(o, Outcome::TimedOut { .. }), "{o:?}");
    assert!(o.elapsed_ms() >= 300, "{o:?}");
    assert!(
        o.summary().starts_with("timed out after 0."),
        "{}",
        o.summary()
    );
    assert_eq!(o.exit_code(), 3);
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_are_errors() {
    let o = perform(
        &Move::Http {
            method: "GET".into(),
            url: "https://127.0.0.1/".into(),
            headers: BTreeMap::new(),
            body: None,
        },
        &Options::default(),
    )
    .await;
    assert!(matches!(o, Outcome::Error { .. }), "{o:?}");
    assert_eq!(o.exit_code(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_logs_from_the_vulnerable_store() {
    let root = tempfile::tempdir().unwrap();
    let store = start_store(root.path(), Mode::Vulnerable).await;
    let mut ftp = ftp_login(store, "anonymous", "x").await.unwrap();
    ftp_put(&mut ftp, "deathstar-ds-2-1.log", "line b\n").await;
    ftp_put(&mut ftp, "deathstar-ds-1-1.log", "line a\n").await;
    ftp_put(&mut ftp, "unrelated.txt", "no\n").await;
    ftp.quit().await.unwrap();

    let mv = Move::FetchLogs {
        store: store.to_string(),
        user: None,
        password: None,
        dir: String::new(),
    };
    let o = perform(&mv, &Options::default()).await;
    let Outcome::FtpOk { files, content, .. } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(files, &["deathstar-ds-1-1.log", "deathstar-ds-2-1.log"]);
    assert_eq!(content, "line a\nline b\n");
    assert_eq!(o.summary(), "fetched 2 log files (2 lines)");
    assert_eq!(o.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_logs_from_the_secure_store_needs_the_password() {
    let root = tempfile::tempdir().unwrap();
    let store = start_store(root.path(), secure_mode(&[("deathstar", "empire")])).await;
    let fetch = |user: Option<&str>, password: Option<&str>| Move::FetchLogs {
        store: store.to_string(),
        user: user.map(str::to_string),
        password: password.map(str::to_string),
        dir: String::new(),
    };
    let o = perform(&fetch(None, None), &Options::default()).await;
    assert!(matches!(o, Outcome::FtpDenied { .. }), "{o:?}");
    assert_eq!(o.exit_code(), 1);
    let o = perform(
        &fetch(Some("deathstar"), Some("rebel")),
        &Options::default(),
    )
    .await;
    assert!(matches!(o, Outcome::FtpDenied { .. }), "{o:?}");
    let o = perform(
        &fetch(Some("deathstar"), Some("empire")),
        &Options::default(),
    )
    .await;
    assert!(
        matches!(&o, Outcome::FtpOk { files, .. } if files.is_empty()),
        "{o:?}"
    );
    // A store that is not there is refused, not denied.
    let gone = Move::FetchLogs {
        store: closed_port().to_string(),
        user: None,
        password: None,
        dir: String::new(),
    };
    let o = perform(&gone, &Options::default()).await;
    assert!(matches!(o, Outcome::Refused { .. }), "{o:?}");
}
