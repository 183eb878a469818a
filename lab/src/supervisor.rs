//! Runs a pod's workload as a real process and restarts it when it exits, like the kubelet with
//! `restartPolicy: Always`: an exponential back-off (1 s doubling to 30 s, reset after a minute
//! of good running — shorter than the kubelet's so a classroom does not wait), a restart count,
//! and the output appended to the pod's log file.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use tokio::sync::watch;

use crate::{
    cluster::RestartPolicy,
    spawn::{InPod, PodContext},
};

/// A process's phase, as a pod's: the API shows it as it is.
pub use model::PodPhase as Phase;

#[derive(Clone, Debug, Serialize)]
pub struct ProcessStatus {
    pub phase: Phase,
    pub restarts: u32,
    pub pid: Option<u32>,
    pub started_at: Option<SystemTime>,
    /// How the last run ended, e.g. "exit code 2" or "killed by signal 9".
    pub last_exit: Option<String>,
}

/// The command line to run (program and arguments), rebuilt on every start so it sees the
/// cluster as it is then (service addresses, for instance).
pub type CommandBuilder = Box<dyn Fn() -> anyhow::Result<(PathBuf, Vec<String>)> + Send + Sync>;

pub struct Supervised {
    pub status: Arc<Mutex<ProcessStatus>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    pub fn start(
        ctx: PodContext,
        log_file: PathBuf,
        policy: RestartPolicy,
        command: CommandBuilder,
    ) -> Self {
        let status = Arc::new(Mutex::new(ProcessStatus {
            phase: Phase::Pending,
            restarts: 0,
            pid: None,
            started_at: None,
            last_exit: None,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(ctx, log_file, policy, command, status.clone(), stop_rx));
        Self { status, stop, task }
    }

    pub fn status(&self) -> ProcessStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and the supervision.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(grace + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::warn!("supervisor did not stop in time");
        }
    }
}

async fn run(
    ctx: PodContext,
    log_file: PathBuf,
    policy: RestartPolicy,
    command: CommandBuilder,
    status: Arc<Mutex<ProcessStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let outcome = run_once(&ctx, &log_file, &command, &status, &mut stop).await;
        let exit = match outcome {
            RunOutcome::Stopped => break,
            RunOutcome::Exited(desc, success) => (desc, success),
        };
        let restart = match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.1,
            RestartPolicy::Never => false,
        };
        {
            let mut st = status.lock().expect("status lock");
            st.pid = None;
            st.last_exit = Some(exit.0.clone());
            st.phase = match (restart, exit.1) {
                (true, _) => Phase::CrashLoopBackOff,
                (false, true) => Phase::Succeeded,
                (false, false) => Phase::Failed,
            };
        }
        append_log(
            &log_file,
            &format!(
                "--- lab: container exited ({}){}",
                exit.0,
                if restart {
                    format!(", restarting in {}s", backoff.as_secs())
                } else {
                    String::new()
                }
            ),
        );
        if !restart {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
        status.lock().expect("status lock").restarts += 1;
    }
    let mut st = status.lock().expect("status lock");
    if st.phase == Phase::Running
        || st.phase == Phase::CrashLoopBackOff
        || st.phase == Phase::Pending
    {
        st.phase = Phase::Terminating;
    }
    st.pid = None;
}

enum RunOutcome {
    Stopped,
    Exited(String, bool),
}

async fn run_once(
    ctx: &PodContext,
    log_file: &PathBuf,
    command: &CommandBuilder,
    status: &Arc<Mutex<ProcessStatus>>,
    stop: &mut watch::Receiver<bool>,
) -> RunOutcome {
    let spawned = (|| -> anyhow::Result<tokio::process::Child> {
        let (program, args) = command()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)?;
        let log2 = log.try_clone()?;
        let mut cmd = tokio::process::Command::from(ctx.command(&program, args)?);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(false);
        Ok(cmd.spawn()?)
    })();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return RunOutcome::Exited(format!("could not start: {e:#}"), false),
    };
    {
        let mut st = status.lock().expect("status lock");
        st.phase = Phase::Running;
        st.pid = child.id();
        st.started_at = Some(SystemTime::now());
    }
    tokio::select! {
        res = child.wait() => match res {
            Ok(s) => RunOutcome::Exited(describe_exit(s), s.success()),
            Err(e) => RunOutcome::Exited(format!("wait failed: {e}"), false),
        },
        _ = stop.changed() => {
            terminate(&mut child).await;
            RunOutcome::Stopped
        }
    }
}

async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(2), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown".into(),
    }
}

fn append_log(path: &PathBuf, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}
