//! Driving the bench lab as a user would: `lab up`/`lab down` as commands, policies through the
//! control API, programs in pods with `lab exec` semantics (the pod's network namespace, cgroup,
//! mounts and hostname, entered between fork and exec).

use std::{
    io::Read,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hyper::Method;
use model::{ApplyRequest, ApplyResult, DeleteRequest, DeleteResult, PolicyEntry};

use crate::{
    client::Client,
    paths::Paths,
    spawn::{InPod, PodContext},
};

pub struct Pod {
    pub ip: Ipv4Addr,
    /// The pod's veth in the node namespace (the datapath's programs are attached there).
    pub node_interface: String,
    ctx: PodContext,
}

impl Pod {
    /// The pod's network namespace (to open sockets in it directly).
    pub fn netns(&self) -> &Path {
        &self.ctx.netns
    }
}

pub struct LabCtl {
    pub instance: String,
    exe: PathBuf,
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Whether this run brought the lab up (and so takes it down).
    pub started_here: bool,
}

/// What a command in a pod did.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl LabCtl {
    pub fn new(instance: &str) -> Result<Self> {
        Ok(LabCtl {
            instance: instance.to_owned(),
            exe: std::env::current_exe()?,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: Client::new(&Paths::new(instance)),
            started_here: false,
        })
    }

    /// Runs `lab --instance NAME ARGS` and fails with its output if it fails.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.exe)
            .arg("--instance")
            .arg(&self.instance)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running lab {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "lab {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn pods(&self) -> Result<Vec<model::Pod>> {
        self.rt.block_on(self.client.get("/api/pods"))
    }

    /// Reuses the lab if it runs with the bench's pods, else brings it up from `manifest`.
    pub fn ensure_up(&mut self, manifest: &Path, pods: &[&str]) -> Result<()> {
        let has_pods = |list: &[model::Pod]| {
            pods.iter().all(|name| {
                list.iter()
                    .any(|p| p.name == *name && p.namespace == "default")
            })
        };
        match self.pods() {
            Ok(list) if has_pods(&list) => {
                eprintln!("[bench] reusing the running lab {:?}", self.instance);
            }
            Ok(_) => bail!(
                "a lab named {:?} is running without the bench's pods; take it down or pick \
                 another name with --bench-instance",
                self.instance
            ),
            Err(_) => {
                eprintln!("[bench] bringing up the bench lab {:?}", self.instance);
                self.cli(&[
                    "up",
                    "-d",
                    "--web",
                    "127.0.0.1:0",
                    "-f",
                    &manifest.display().to_string(),
                ])?;
                self.started_here = true;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let list = self.pods()?;
            if has_pods(&list)
                && pods
                    .iter()
                    .all(|n| list.iter().any(|p| p.name == *n && p.ready))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the bench pods are not ready after 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn status(&self) -> Result<model::Status> {
        self.rt.block_on(self.client.get("/api/status"))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        self.get_text("/metrics")
    }

    /// The body of `path`, as it is (for timing what a page would load).
    pub fn get_text(&self, path: &str) -> Result<String> {
        self.rt.block_on(self.client.text(path))
    }

    pub fn down(&self) -> Result<()> {
        self.cli(&["down"]).map(|_| ())
    }

    pub fn pod(&self, name: &str) -> Result<Pod> {
        let list = self.pods()?;
        let p = list
            .iter()
            .find(|p| p.name == name && p.namespace == "default")
            .with_context(|| format!("no pod {name} in the bench lab"))?;
        let ctx: PodContext = self.rt.block_on(
            self.client
                .get(&format!("/api/pods/default/{name}/context")),
        )?;
        Ok(Pod {
            ip: p.ip,
            node_interface: p.node_interface.clone(),
            ctx,
        })
    }

    /// Applies CiliumNetworkPolicy YAML through the API (validated, then applied at once).
    pub fn apply(&self, source: &str, yaml: &str) -> Result<()> {
        let req = ApplyRequest {
            source: source.into(),
            text: yaml.into(),
            dry_run: false,
        };
        self.rt
            .block_on(self.client.post::<ApplyResult>("/api/policies", &req))
            .map(|_| ())
    }

    pub fn delete_policies(&self) -> Result<()> {
        let req = DeleteRequest {
            all: true,
            ..Default::default()
        };
        self.rt
            .block_on(
                self.client
                    .call::<DeleteResult>(Method::DELETE, "/api/policies", Some(&req)),
            )
            .map(|_| ())
    }

    pub fn policy_count(&self) -> Result<usize> {
        let list: Vec<PolicyEntry> = self.rt.block_on(self.client.get("/api/policies"))?;
        Ok(list.len())
    }

    fn command(&self, pod: &Pod, argv: &[String]) -> Result<Command> {
        let (program, args) = argv.split_first().context("empty command")?;
        pod.ctx.command(program, args)
    }

    /// Runs `argv` in `pod`, capturing its output, killed after `timeout`.
    pub fn exec(&self, pod: &Pod, argv: &[String], timeout: Duration) -> Result<Ran> {
        self.exec_until(pod, argv, timeout, false)
    }

    /// Like [`LabCtl::exec`], but also killed as soon as the run is cancelled (for the load
    /// generator, which may run for minutes).
    pub fn exec_cancellable(&self, pod: &Pod, argv: &[String], timeout: Duration) -> Result<Ran> {
        self.exec_until(pod, argv, timeout, true)
    }

    fn exec_until(
        &self,
        pod: &Pod,
        argv: &[String],
        timeout: Duration,
        cancellable: bool,
    ) -> Result<Ran> {
        let mut child = self
            .command(pod, argv)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} in a pod", argv[0]))?;
        let mut out = child.stdout.take().expect("piped");
        let mut err = child.stderr.take().expect("piped");
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let (code, timed_out) = loop {
            if let Some(status) = child.try_wait()? {
                break (status.code(), false);
            }
            if Instant::now() > deadline || (cancellable && super::progress::cancelled()) {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok(Ran {
            code,
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
            timed_out,
        })
    }

    /// Runs `argv` in `pod` and fails unless it exits 0.
    pub fn exec_ok(&self, pod: &Pod, argv: &[&str]) -> Result<String> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let r = self.exec(pod, &argv, Duration::from_secs(60))?;
        if r.code != Some(0) {
            bail!(
                "{} in the pod failed ({:?}): {}{}",
                argv.join(" "),
                r.code,
                r.stdout,
                r.stderr
            );
        }
        Ok(r.stdout)
    }

    /// Starts `argv` in `pod` in the background (output to `log`).
    pub fn spawn(&self, pod: &Pod, argv: &[String], log: &Path) -> Result<Child> {
        let f = std::fs::File::create(log)?;
        Ok(self
            .command(pod, argv)?
            .stdin(Stdio::null())
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()?)
    }
}
