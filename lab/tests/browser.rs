//! A real browser for the tests: chromedriver on a free port driving headless Chromium with a
//! fresh profile (both this test's own processes, killed by pid when it ends, also when it
//! fails), and helpers to load pages, wait for the page's state, size the viewport and write
//! screenshots to `target/screenshots/`. Used by `web.rs` and `bench_page.rs`.

use std::{
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::harness::TestLab;

/// Chromedriver on a free port with a fresh Chromium profile; on drop, chromedriver and every
/// Chromium process using this profile are killed (by pid) and the profile is removed.
pub struct Browser {
    driver: Child,
    port: u16,
    profile: PathBuf,
}

impl Browser {
    pub fn start() -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let profile = std::env::temp_dir().join(testkit::unique_name("lab-web-chromium"));
        std::fs::create_dir_all(&profile)?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so nothing of it lingers in the test runner's.
            .process_group(0)
            .spawn()
            .context(
                "starting chromedriver (Debian's chromium-driver, installed by scripts/setup.sh)",
            )?;
        Ok(Self {
            driver,
            port,
            profile,
        })
    }

    pub async fn connect(&self) -> Result<Client> {
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| anyhow!("chromium is not installed (scripts/setup.sh installs it)"))?;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ClientBuilder::native()
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() > deadline => {
                    bail!("could not start a Chromium session through chromedriver: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Processes whose command line names this test's profile: the Chromium it started.
    fn chromium_pids(&self) -> Vec<i32> {
        let needle = format!("--user-data-dir={}", self.profile.display());
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == needle.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        use nix::{sys::signal, unistd::Pid};
        let _ = signal::kill(
            Pid::from_raw(self.driver.id() as i32),
            signal::Signal::SIGKILL,
        );
        let _ = self.driver.wait();
        for _ in 0..20 {
            let pids = self.chromium_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Runs `f` in a fresh browser session; if it fails, the page is screenshot as `failure_shot`.
/// The session is closed and the browser killed in every case.
pub fn session(failure_shot: &str, f: impl AsyncFnOnce(&Client) -> Result<()>) -> Result<()> {
    let browser = Browser::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let c = browser.connect().await?;
        let r = f(&c).await;
        if r.is_err() {
            let _ = shot(&c, failure_shot).await;
        }
        let _ = c.close().await;
        r
    });
    drop(browser);
    outcome
}

/// `target/screenshots/` (beside the test's temporary directory, so a custom target dir works).
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|t| t.join("screenshots"))
        .unwrap_or_else(|| PathBuf::from("target/screenshots"));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub async fn shot(c: &Client, name: &str) -> Result<()> {
    let png = c.screenshot().await?;
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png)?;
    Ok(())
}

pub async fn js(c: &Client, script: &str, args: Vec<Value>) -> Result<Value> {
    Ok(c.execute(script, args).await?)
}

/// Polls a script until it returns something truthy, and returns that.
pub async fn until(c: &Client, what: &str, secs: u64, script: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = js(c, script, vec![]).await?;
        let truthy = match &v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if truthy {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until the cluster page's live flow stream is connected.
pub async fn live_flows(c: &Client) -> Result<()> {
    until(
        c,
        "the live flow stream",
        10,
        "return document.getElementById('live').textContent === 'live flows'",
    )
    .await
    .map(drop)
}

/// Makes the page's viewport exactly `w`×`h` (the window is larger by the browser's frame).
pub async fn viewport(c: &Client, w: u32, h: u32) -> Result<()> {
    c.set_window_size(w, h).await?;
    let inner = js(c, "return [window.innerWidth, window.innerHeight]", vec![]).await?;
    let (iw, ih) = (
        inner[0].as_u64().unwrap_or(w.into()) as u32,
        inner[1].as_u64().unwrap_or(h.into()) as u32,
    );
    c.set_window_size(w + (w - iw.min(w)), h + (h - ih.min(h)))
        .await?;
    Ok(())
}

/// Fails if the page scrolls sideways (`page` names it in the error).
pub async fn fits_window_width(c: &Client, page: &str) -> Result<()> {
    let over = js(
        c,
        "return document.documentElement.scrollWidth - window.innerWidth",
        vec![],
    )
    .await?;
    if over.as_f64().unwrap_or(1.0) > 1.0 {
        bail!("{page} is wider than the window by {over}px");
    }
    Ok(())
}

/// Loads a page, waits for its load event and returns how long the load took.
pub async fn load(c: &Client, url: &str) -> Result<f64> {
    c.goto(url).await?;
    let ms = until(
        c,
        &format!("{url} to load"),
        10,
        "const n = performance.getEntriesByType('navigation')[0]; \
         return n && n.loadEventEnd > 0 ? n.loadEventEnd - n.startTime : null;",
    )
    .await?;
    ms.as_f64().ok_or_else(|| anyhow!("no load time for {url}"))
}

pub fn web_address(lab: &TestLab) -> String {
    let status = lab.ok(&["status"]);
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("Web lab:"))
        .map(|a| a.trim().trim_end_matches('/').to_owned())
        .unwrap_or_else(|| panic!("no web address in `lab status`:\n{status}"))
}
