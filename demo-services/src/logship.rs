//! Ships the Deathstar's API log records over FTP to remote log stores, in batches.
//!
//! Each target (store) has its own bounded buffer and its own worker task, so an outage of one
//! store never delays another, and recording ([`LogShipper::record`]) never waits: when a
//! buffer is full the record is dropped for that target and counted. A worker gathers records
//! for one batch interval, uploads them as one new file, and on failure keeps the batch and
//! retries with capped exponential backoff. Counters live in [`LogShipStats`] and a summary line
//! is logged periodically.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::ftp_client::{FtpClientError, FtpSession};

/// How the shipper behaves; every field has a default so `{}` is a valid config (no targets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The stores to ship to; each gets every record.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// How long records gather before a batch is uploaded.
    #[serde(default = "default_batch_interval_ms")]
    pub batch_interval_ms: u64,
    /// Most records in one uploaded file.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Most records waiting per target; further records are dropped (and counted).
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// Bound on resolving, connecting and every FTP command or transfer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// First wait after a failed upload; doubles after each further failure...
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// ...up to this.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How often the counters are logged as one summary line.
    #[serde(default = "default_stats_interval_ms")]
    pub stats_interval_ms: u64,
}

/// One remote log store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A name for logs and counters, e.g. "ftp-secure".
    pub name: String,
    /// "host:port"; host may be a DNS name (resolved at every upload) or an IP.
    pub addr: String,
    /// `None` logs in anonymously.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Directory on the store for the files, created if missing; empty means the login directory.
    #[serde(default)]
    pub dir: String,
}

fn default_batch_interval_ms() -> u64 {
    1000
}
fn default_max_batch() -> usize {
    1000
}
fn default_buffer() -> usize {
    10_000
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_backoff_min_ms() -> u64 {
    200
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_stats_interval_ms() -> u64 {
    30_000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            targets: Vec::new(),
            batch_interval_ms: default_batch_interval_ms(),
            max_batch: default_max_batch(),
            buffer: default_buffer(),
            timeout_ms: default_timeout_ms(),
            backoff_min_ms: default_backoff_min_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            stats_interval_ms: default_stats_interval_ms(),
        }
    }
}

/// One served API request, as the Deathstar logs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub client: SocketAddr,
    pub method: String,
    /// Path with the query string, as the client sent it.
    pub path: String,
    pub status: u16,
    pub pod: String,
}

impl ApiRecord {
    /// A record stamped with the current time.
    pub fn now(client: SocketAddr, method: &str, path: &str, status: u16, pod: &str) -> Self {
        ApiRecord {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            client,
            method: method.to_string(),
            path: path.to_string(),
            status,
            pod: pod.to_string(),
        }
    }
}

/// The line written to the stores: `TIME CLIENT METHOD PATH STATUS POD`.
impl fmt::Display for ApiRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.time, self.client, self.method, self.path, self.status, self.pod
        )
    }
}

/// Counters of one target. All only grow.
#[derive(Debug, Default)]
pub struct TargetStats {
    pub name: String,
    /// Records accepted into the buffer.
    pub queued: AtomicU64,
    /// Records in files the store confirmed.
    pub shipped: AtomicU64,
    /// Records refused because the buffer was full.
    pub dropped: AtomicU64,
    pub batches_ok: AtomicU64,
    pub batches_failed: AtomicU64,
}

/// A plain copy of one target's counters, for tests and for rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetCounts {
    pub name: String,
    pub queued: u64,
    pub shipped: u64,
    pub dropped: u64,
    pub batches_ok: u64,
    pub batches_failed: u64,
}

impl TargetStats {
    pub fn snapshot(&self) -> TargetCounts {
        TargetCounts {
            name: self.name.clone(),
            queued: self.queued.load(Ordering::Relaxed),
            shipped: self.shipped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            batches_ok: self.batches_ok.load(Ordering::Relaxed),
            batches_failed: self.batches_failed.load(Ordering::Relaxed),
        }
    }
}

/// The counters of every target, in the order of [`Config::targets`].
#[derive(Debug, Default)]
pub struct LogShipStats {
    pub targets: Vec<Arc<TargetStats>>,
}

impl LogShipStats {
    pub fn snapshot(&self) -> Vec<TargetCounts> {
        self.targets.iter().map(|t| t.snapshot()).collect()
    }

    /// One line, e.g. `ftp-secure: queued=12 shipped=12 dropped=0 batches ok=3 failed=0; ...`.
    pub fn render(&self) -> String {
        if self.targets.is_empty() {
            return "no log targets".to_string();
        }
        self.snapshot()
            .iter()
            .map(|c| {
                format!(
                    "{}: queued={} shipped={} dropped={} batches ok={} failed={}",
                    c.name, c.queued, c.shipped, c.dropped, c.batches_ok, c.batches_failed
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The handle the Deathstar records through. Dropping it stops the workers after they try once
/// more to upload what they hold.
pub struct LogShipper {
    senders: Vec<mpsc::Sender<Arc<str>>>,
    stats: Arc<LogShipStats>,
    // Dropping the sender ends the summary task.
    _stop_summary: oneshot::Sender<()>,
}

impl LogShipper {
    /// Starts one worker per target and the summary logger on the current tokio runtime.
    /// `pod` names the files (`deathstar-<pod>-<unix_millis>-<seq>.log`).
    pub fn start(cfg: Config, pod: &str) -> LogShipper {
        let settings = Arc::new(Settings {
            pod: file_name_safe(pod),
            batch_interval: Duration::from_millis(cfg.batch_interval_ms),
            max_batch: cfg.max_batch.max(1),
            timeout: Duration::from_millis(cfg.timeout_ms),
            backoff_min: Duration::from_millis(cfg.backoff_min_ms.max(1)),
            backoff_max: Duration::from_millis(cfg.backoff_max_ms.max(cfg.backoff_min_ms)),
        });
        let mut senders = Vec::new();
        let mut targets = Vec::new();
        for target in cfg.targets {
            let (tx, rx) = mpsc::channel(cfg.buffer.max(1));
            let stats = Arc::new(TargetStats {
                name: target.name.clone(),
                ..TargetStats::default()
            });
            senders.push(tx);
            targets.push(stats.clone());
            tokio::spawn(run_target(target, rx, stats, settings.clone()));
        }
        let stats = Arc::new(LogShipStats { targets });
        let (stop_tx, stop_rx) = oneshot::channel();
        if !stats.targets.is_empty() {
            let every = Duration::from_millis(cfg.stats_interval_ms.max(1));
            tokio::spawn(log_summaries(stats.clone(), every, stop_rx));
        }
        LogShipper {
            senders,
            stats,
            _stop_summary: stop_tx,
        }
    }

    /// Queues the record for every target without waiting; full buffers count a drop.
    pub fn record(&self, rec: &ApiRecord) {
        if self.senders.is_empty() {
            return;
        }
        // Formatted once and shared by all targets.
        let line: Arc<str> = Arc::from(rec.to_string());
        for (tx, stats) in self.senders.iter().zip(&self.stats.targets) {
            match tx.try_send(line.clone()) {
                Ok(()) => stats.queued.fetch_add(1, Ordering::Relaxed),
                Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }

    pub fn stats(&self) -> &Arc<LogShipStats> {
        &self.stats
    }
}

/// The per-worker copy of the timing settings.
struct Settings {
    pod: String,
    batch_interval: Duration,
    max_batch: usize,
    timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
}

/// The file name must not let a pod name reach outside the target directory.
fn file_name_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The name of a new batch file; `seq` tells apart files made within one millisecond.
pub fn batch_file_name(pod: &str, unix_millis: u128, seq: u64) -> String {
    format!("deathstar-{}-{unix_millis}-{seq}.log", file_name_safe(pod))
}

async fn run_target(
    target: Target,
    mut rx: mpsc::Receiver<Arc<str>>,
    stats: Arc<TargetStats>,
    settings: Arc<Settings>,
) {
    let mut batch: Vec<Arc<str>> = Vec::new();
    let mut file_name = String::new();
    let mut seq: u64 = 0;
    let mut backoff = settings.backoff_min;
    let mut closed = false;
    loop {
        if batch.is_empty() {
            // Idle until the first record, then let the batch gather for one interval.
            match rx.recv().await {
                Some(line) => batch.push(line),
                None => return,
            }
            let deadline = Instant::now() + settings.batch_interval;
            closed = gather_until(&mut rx, &mut batch, settings.max_batch, deadline).await;
            seq += 1;
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            // The name stays across retries: a retry after a half-finished upload overwrites.
            file_name = batch_file_name(&settings.pod, millis, seq);
        } else {
            // A retry: take in what arrived meanwhile, up to the batch size, without waiting.
            while batch.len() < settings.max_batch {
                match rx.try_recv() {
                    Ok(line) => batch.push(line),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }

        match upload(&target, &file_name, &batch, settings.timeout).await {
            Ok(()) => {
                stats
                    .shipped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.batches_ok.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target = %target.name, file = %file_name, records = batch.len(), "batch shipped");
                batch.clear();
                backoff = settings.backoff_min;
            }
            Err(e) => {
                stats.batches_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target = %target.name, addr = %target.addr, error = %e, retry_in = ?backoff, "log upload failed");
                if closed {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
        if closed && batch.is_empty() {
            return;
        }
    }
}

/// Adds records to `batch` until it is full or `deadline` passes. Returns true when the
/// shipper was dropped (no more records will come).
async fn gather_until(
    rx: &mut mpsc::Receiver<Arc<str>>,
    batch: &mut Vec<Arc<str>>,
    max: usize,
    deadline: Instant,
) -> bool {
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => batch.push(line),
            Ok(None) => return true,
            Err(_) => break,
        }
    }
    false
}

/// One FTP session: log in, enter the directory, store the file, quit.
async fn upload(
    target: &Target,
    file_name: &str,
    batch: &[Arc<str>],
    timeout: Duration,
) -> Result<(), FtpClientError> {
    let mut content = String::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
    for line in batch {
        content.push_str(line);
        content.push('\n');
    }
    let mut session = FtpSession::open(
        &target.addr,
        target.user.as_deref(),
        target.password.as_deref(),
        timeout,
    )
    .await?;
    session.enter_dir(&target.dir).await?;
    session.put(file_name, content.as_bytes()).await?;
    session.quit().await;
    Ok(())
}

async fn log_summaries(stats: Arc<LogShipStats>, every: Duration, mut stop: oneshot::Receiver<()>) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await; // the first tick is immediate; nothing to report yet
    loop {
        tokio::select! {
            _ = ticker.tick() => tracing::info!("logship: {}", stats.render()),
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_line_has_the_documented_fields_in_order() {
        let rec = ApiRecord {
            time: "2026-11-21T21:00:00.000Z".into(),
            client: "10.244.0.7:41234".parse().unwrap(),
            method: "POST".into(),
            path: "/v1/request-landing?x=1".into(),
            status: 200,
            pod: "deathstar-1".into(),
        };
        assert_eq!(
            rec.to_string(),
            "2026-11-21T21:00:00.000Z 10.244.0.7:41234 POST /v1/request-landing?x=1 200 deathstar-1"
        );
    }

    #[test]
    fn record_time_is_rfc3339_utc() {
        let rec = ApiRecord::now("127.0.0.1:1".parse().unwrap(), "GET", "/v1", 200, "p");
        assert!(rec.time.ends_with('Z'), "{}", rec.time);
        assert!(chrono::DateTime::parse_from_rfc3339(&rec.time).is_ok());
    }

    #[test]
    fn file_names_cannot_escape_the_directory() {
        assert_eq!(
            batch_file_name("../etc/x y", 17, 3),
            "deathstar-.._etc_x_y-17-3.log"
        );
        assert_eq!(
            batch_file_name("deathstar-abc", 1, 1),
            "deathstar-deathstar-abc-1-1.log"
        );
    }

    #[test]
    fn empty_config_parses_with_defaults() {
        let cfg: Config = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.buffer, 10_000);
    }

    #[tokio::test]
    async fn full_buffer_counts_drops_without_waiting() {
        let cfg = Config {
            targets: vec![Target {
                name: "nowhere".into(),
                // Port 1 on loopback: nothing listens, so the worker holds its batch.
                addr: "127.0.0.1:1".into(),
                user: None,
                password: None,
                dir: String::new(),
            }],
            buffer: 3,
            max_batch: 1,
            batch_interval_ms: 60_000,
            ..Config::default()
        };
        let shipper = LogShipper::start(cfg, "p");
        let rec = ApiRecord::now("127.0.0.1:1".parse().unwrap(), "GET", "/v1", 200, "p");
        for _ in 0..10 {
            shipper.record(&rec);
        }
        let c = &shipper.stats().snapshot()[0];
        assert_eq!(c.queued + c.dropped, 10);
        // At most the buffer plus the one record the worker took out can have been accepted.
        assert!(c.queued <= 4, "{c:?}");
        assert!(c.dropped >= 6, "{c:?}");
    }
}
