//! A lab under test: `lab up -d` with a unique instance name and an ephemeral web port, driven
//! through the real binary, and always taken down (even when the test panics), checking that
//! nothing of it is left behind.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const LAB: &str = env!("CARGO_BIN_EXE_lab");

pub struct TestLab {
    pub instance: String,
    down: bool,
}

impl TestLab {
    /// The default cluster.
    pub fn up() -> Self {
        Self::up_with(&[])
    }

    /// A cluster from manifest files.
    pub fn up_with(files: &[&Path]) -> Self {
        Self::up_named(&testkit::unique_name("lt"), files)
    }

    /// The default cluster under a name the test chose.
    pub fn up_as(instance: &str) -> Self {
        Self::up_named(instance, &[])
    }

    fn up_named(instance: &str, files: &[&Path]) -> Self {
        testkit::require_root();
        let instance = instance.to_owned();
        let mut args = vec!["--instance", &instance, "up", "-d", "--web", "127.0.0.1:0"];
        let file_strs: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        for f in &file_strs {
            args.extend(["-f", f.as_str()]);
        }
        let out = Command::new(LAB)
            .args(&args)
            .output()
            .expect("running lab up");
        let lab = Self {
            instance: instance.clone(),
            down: false,
        };
        assert!(
            out.status.success(),
            "lab up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab.wait_ready(Duration::from_secs(30));
        lab
    }

    pub fn lab(&self, args: &[&str]) -> Output {
        let mut all = vec!["--instance", self.instance.as_str()];
        all.extend_from_slice(args);
        Command::new(LAB).args(&all).output().expect("running lab")
    }

    /// Runs `lab ARGS` and returns stdout, failing the test on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.lab(args);
        assert!(
            out.status.success(),
            "lab {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("json output")
    }

    pub fn pods(&self) -> Vec<Value> {
        self.json(&["get", "pods", "-A", "-o", "json"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn pod(&self, name: &str) -> Value {
        self.pods()
            .into_iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Names of the pods of a deployment.
    pub fn replicas(&self, deployment: &str) -> Vec<String> {
        self.pods()
            .iter()
            .filter(|p| p["owner"] == deployment)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until every pod is running and every service has endpoints.
    pub fn wait_ready(&self, timeout: Duration) {
        let ok = testkit::wait_for(timeout, || {
            let pods = self.pods();
            let svcs = self.json(&["get", "svc", "-A", "-o", "json"]);
            let pods_ready = !pods.is_empty() && pods.iter().all(|p| p["ready"] == true);
            let svcs_ready = svcs.as_array().is_some_and(|s| {
                s.iter().all(|svc| {
                    svc["ports"].as_array().is_some_and(|ports| {
                        ports
                            .iter()
                            .all(|p| p["endpoints"].as_array().is_some_and(|e| !e.is_empty()))
                    })
                })
            });
            (pods_ready && svcs_ready).then_some(())
        });
        assert!(
            ok.is_some(),
            "lab {} not ready in {timeout:?}: {:#?}",
            self.instance,
            self.pods()
        );
    }

    /// `lab exec POD -- ARGS`, returning (exit code, stdout).
    pub fn exec(&self, pod: &str, args: &[&str]) -> (i32, String) {
        let mut all = vec!["exec", pod, "--"];
        all.extend_from_slice(args);
        let out = self.lab(&all);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `lab ship POD MOVE -o json`
    pub fn ship(&self, pod: &str, args: &[&str]) -> Value {
        let mut all = vec!["ship", pod];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let out = self.lab(&all);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "ship output: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The tiefighter fetches the Deathstar's logs from the secure store with the Deathstar's
    /// own account (the outcome of the `fetch-logs` move).
    pub fn secure_store_logs(&self) -> Value {
        self.ship(
            "tiefighter",
            &[
                "fetch-logs",
                "ftp-secure",
                "--user",
                "deathstar",
                "--password",
                "darkside",
            ],
        )
    }

    pub fn apply(&self, yaml: &str) -> Output {
        let dir = std::env::temp_dir().join(format!(
            "{}-{}.yaml",
            self.instance,
            testkit::unique_name("p")
        ));
        std::fs::write(&dir, yaml).unwrap();
        let out = self.lab(&["policy", "apply", "-f", dir.to_str().unwrap()]);
        let _ = std::fs::remove_file(&dir);
        out
    }

    /// Applies a policy document and fails the test, with lab's error, if it is refused.
    pub fn applied(&self, yaml: &str) {
        let out = self.apply(yaml);
        assert!(
            out.status.success(),
            "policy refused: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Flows as JSON values (most recent last).
    pub fn flows(&self, query: &[&str]) -> Vec<Value> {
        let mut args = vec!["observe", "-o", "json", "--last", "10000"];
        args.extend_from_slice(query);
        self.ok(&args)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Kills the lab's own process with SIGKILL (a crash) and waits until it is gone; the
    /// cluster it ran stays behind.
    pub fn kill_daemon(&self) {
        let pid = self.daemon_pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        testkit::wait_for(Duration::from_secs(5), || {
            (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
    }

    pub fn daemon_pid(&self) -> i32 {
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(self.state_file()).unwrap()).unwrap();
        s["pid"].as_i64().unwrap() as i32
    }

    pub fn state_file(&self) -> PathBuf {
        Path::new("/run/lab")
            .join(&self.instance)
            .join("state.json")
    }

    /// Everything of this instance still on the machine.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.instance)
    }

    pub fn down(&mut self) {
        let out = self.lab(&["down"]);
        self.down = true;
        assert!(
            out.status.success(),
            "lab down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left = testkit::wait_for(Duration::from_secs(10), || {
            let l = self.leftovers();
            l.is_empty().then_some(())
        });
        assert!(left.is_some(), "left behind: {:?}", self.leftovers());
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if !self.down {
            let _ = self.lab(&["down"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.leftovers().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

pub fn leftovers(instance: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{instance}-")) {
                out.push(format!("netns {n}"));
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    // The lab's cgroups live in the one cgroup v2 hierarchy, wherever else it is mounted.
    for l in mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
    {
        if let Some(m) = l.split_whitespace().nth(1) {
            let cg = Path::new(m).join(format!("lab-{instance}"));
            if cg.exists() {
                out.push(format!("cgroup {}", cg.display()));
            }
        }
    }
    for l in mounts.lines() {
        if let Some(m) = l.split_whitespace().nth(1)
            && (m.starts_with(&format!("/run/lab/{instance}/"))
                || m == format!("/run/lab/{instance}"))
        {
            out.push(format!("mount {m}"));
        }
    }
    for p in [
        instance.to_owned(),
        format!("{instance}.lock"),
        format!("{instance}.log"),
    ] {
        if Path::new("/run/lab").join(&p).exists() {
            out.push(format!("/run/lab/{p}"));
        }
    }
    out
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
