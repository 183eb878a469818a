//! The FTP stores: the secure one keeps strangers out and users apart, the vulnerable one lets
//! anyone read and write, and both advertise the address the client reached.

use demo_services::ftpstore::Mode;
use suppaftp::FtpError;
use suppaftp::tokio::AsyncFtpStream;

use crate::common::{ftp_get, ftp_login, ftp_put, secure_mode, start_store, start_store_on};

fn reply_code(err: &FtpError) -> Option<u32> {
    match err {
        FtpError::UnexpectedResponse(r) => Some(r.status.code()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_store_refuses_anonymous_and_wrong_passwords() {
    let root = tempfile::tempdir().unwrap();
    let addr = start_store(root.path(), secure_mode(&[("deathstar", "empire")])).await;

    let mut ftp = AsyncFtpStream::connect(addr).await.unwrap();
    let banner = ftp.get_welcome_msg().unwrap_or_default().to_string();
    assert!(banner.contains("test-store"), "{banner}");
    let err = ftp.login("anonymous", "anonymous@").await.unwrap_err();
    assert_eq!(reply_code(&err), Some(530), "{err}");

    let err = ftp_login(addr, "deathstar", "rebel").await.err().unwrap();
    assert_eq!(reply_code(&err), Some(530), "{err}");
    let err = ftp_login(addr, "ftp", "").await.err().unwrap();
    assert_eq!(reply_code(&err), Some(530), "{err}");

    let mut ftp = ftp_login(addr, "deathstar", "empire").await.unwrap();
    ftp_put(&mut ftp, "hello.log", "one\ntwo\n").await;
    assert_eq!(ftp_get(&mut ftp, "hello.log").await.unwrap(), "one\ntwo\n");
    ftp.quit().await.unwrap();
    // Files survive on disk, under the user's own directory.
    let on_disk = std::fs::read_to_string(root.path().join("deathstar/hello.log")).unwrap();
    assert_eq!(on_disk, "one\ntwo\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_store_keeps_each_user_in_its_own_directory() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("top-secret.txt"), "plans").unwrap();
    let addr = start_store(
        root.path(),
        secure_mode(&[("alice", "a-pass"), ("bob", "b-pass")]),
    )
    .await;

    let mut alice = ftp_login(addr, "alice", "a-pass").await.unwrap();
    ftp_put(&mut alice, "alice.log", "alice's line\n").await;
    alice.quit().await.unwrap();

    let mut bob = ftp_login(addr, "bob", "b-pass").await.unwrap();
    assert_eq!(bob.pwd().await.unwrap(), "/");
    let names = bob.nlst(None).await.unwrap();
    assert!(names.is_empty(), "bob sees {names:?}");
    // Neither climbing out nor naming the other's file reaches it.
    let _ = bob.cdup().await;
    assert!(bob.nlst(None).await.unwrap().is_empty());
    assert!(ftp_get(&mut bob, "../alice/alice.log").await.is_err());
    assert!(ftp_get(&mut bob, "../top-secret.txt").await.is_err());
    assert!(ftp_get(&mut bob, "/top-secret.txt").await.is_err());
    bob.quit().await.unwrap();

    assert!(root.path().join("alice/alice.log").is_file());
    assert!(root.path().join("bob").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulnerable_store_lets_anyone_read_and_write() {
    let root = tempfile::tempdir().unwrap();
    let addr = start_store(root.path(), Mode::Vulnerable).await;

    let mut ftp = AsyncFtpStream::connect(addr).await.unwrap();
    let banner = ftp.get_welcome_msg().unwrap_or_default().to_string();
    assert!(banner.contains("maintenance"), "{banner}");
    ftp.login("anonymous", "whatever").await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    ftp_put(&mut ftp, "rebel-plans.txt", "exhaust port\n").await;
    ftp.quit().await.unwrap();

    // Another stranger, any name, any password: reads, overwrites.
    let mut other = ftp_login(addr, "ftp", "").await.unwrap();
    assert_eq!(other.nlst(None).await.unwrap(), vec!["rebel-plans.txt"]);
    assert_eq!(
        ftp_get(&mut other, "rebel-plans.txt").await.unwrap(),
        "exhaust port\n"
    );
    ftp_put(&mut other, "rebel-plans.txt", "changed\n").await;
    other.quit().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(root.path().join("rebel-plans.txt")).unwrap(),
        "changed\n"
    );
}

/// The passive address must be the one the client connected to (in the lab, the pod's IP).
/// 127.0.0.2 is loopback too, and differs from the 127.0.0.1 a careless server would announce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_mode_advertises_the_address_connected_to() {
    let root = tempfile::tempdir().unwrap();
    let addr = start_store_on("127.0.0.2", root.path(), Mode::Vulnerable).await;
    let mut ftp = ftp_login(addr, "anonymous", "x").await.unwrap();
    let reply = ftp
        .custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&reply.body).to_string();
    assert!(text.contains("(127,0,0,2,"), "{text}");
    // And a real transfer over that address works.
    drop(ftp);
    let mut ftp = ftp_login(addr, "anonymous", "x").await.unwrap();
    ftp_put(&mut ftp, "a.txt", "a\n").await;
    assert_eq!(ftp_get(&mut ftp, "a.txt").await.unwrap(), "a\n");
}
