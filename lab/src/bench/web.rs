//! The web lab's Benchmark page, lab side: the `/api/x/bench/...` routes.
//!
//! A run started from the page is a child process, `lab bench [all|http|datapath] --quick
//! --bench-instance bench-<instance> --out DIR --progress-json DIR/progress.jsonl`, in its own
//! process group, with its output in `DIR/bench.log`: the lab process never blocks on it, only a
//! tokio task waits for it to exit. It brings up its own lab and takes it down at the end, as
//! `lab bench` always does — whether or not anyone still looks at the page. When the lab itself
//! shuts down, the run is sent SIGTERM, which makes it stop after the current step and still take
//! its bench lab down. One run at a time per lab.
//!
//! Where results live: `DIR` is `/run/lab/<instance>/bench/<timestamp>/`. Every directory there
//! with a `results.json` is a run the page can show (so `lab bench --out
//! /run/lab/<instance>/bench/NAME` from the command line shows up too), and so is every directory
//! added with `POST /api/x/bench/sources {"dir": "/abs/path"}` (recorded in
//! `/run/lab/<instance>/bench/sources.json`). "Latest" is the one that finished last.
//!
//! Routes (an axum router the lab mounts beside the control API, under `/api/x/bench`; they
//! answer JSON as the page reads it): `GET status` (also `GET /api/x/bench`), `POST start`
//! `{"configs": [id...], "datapath": bool}`, `POST cancel`, `GET runs`, `GET results` (the
//! latest), `GET results/<run>`, `GET plots/<run>/<file>.svg` (`{"name", "svg"}`), `POST sources`.
//! Plots are only ever read from a known run's directory, by a fixed file name, as a regular file
//! (no symlink), and only if they are plain SVG (no script, no event handlers, no foreign
//! content); the page shows them as images, which never run scripts anyway.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::control::Lab;

/// The plots `lab bench` writes, the only files served from a run's directory besides
/// `results.json`.
pub const PLOTS: [&str; 4] = [
    "latency.svg",
    "latency-l3-l4.svg",
    "throughput.svg",
    "datapath.svg",
];

const MAX_RESULTS_BYTES: u64 = 32 << 20;
const MAX_PLOT_BYTES: u64 = 8 << 20;

/// The run started from the page (the one in progress, or the last one).
struct Run {
    id: String,
    dir: PathBuf,
    bench_instance: String,
    started: Instant,
    started_at: String,
    pid: Option<u32>,
    configs: Vec<String>,
    datapath: bool,
    cancel_requested: bool,
    exit: Option<Exit>,
}

struct Exit {
    success: bool,
    status: String,
    elapsed: Duration,
}

static RUN: Mutex<Option<Run>> = Mutex::new(None);

/// An error answer, shaped like the control API's (`{"error", "details"}`).
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub error: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(status: u16, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            details: None,
        }
    }
    fn not_found(error: impl Into<String>) -> Self {
        Self::new(404, error)
    }
    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = json!({ "error": self.error });
        if let Some(d) = self.details {
            body["details"] = d;
        }
        (status, Json(body)).into_response()
    }
}

impl From<ApiError> for web::ApiError {
    fn from(e: ApiError) -> Self {
        web::ApiError::new(e.status, e.error)
    }
}

fn err500(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, e.to_string())
}

/// `/run/lab/<instance>/bench`.
pub fn results_root(lab: &Lab) -> PathBuf {
    lab.paths.root.join("bench")
}

/// The instance a page-started run brings up (not prefixed by this lab's name, so its
/// namespaces are never mistaken for this lab's).
pub fn bench_instance(lab: &Lab) -> String {
    format!("bench-{}", lab.paths.instance)
}

/// Dispatches `/api/x/bench/<path>`.
type Answer = Result<Json<Value>, ApiError>;

/// The routes under `/api/x/bench`.
pub fn routes(lab: Arc<Lab>) -> Router {
    Router::new()
        .route("/api/x/bench", get(status_route))
        .route("/api/x/bench/status", get(status_route))
        .route("/api/x/bench/start", post(start_route))
        .route("/api/x/bench/cancel", post(|| async { cancel().map(Json) }))
        .route(
            "/api/x/bench/runs",
            get(|State(lab): State<Arc<Lab>>| async move {
                blocking(move || Ok(json!(listing(&lab)))).await
            }),
        )
        .route(
            "/api/x/bench/results",
            get(|State(lab): State<Arc<Lab>>| async move {
                blocking(move || results(&lab, None)).await
            }),
        )
        .route(
            "/api/x/bench/results/{id}",
            get(
                |State(lab): State<Arc<Lab>>, UrlPath(id): UrlPath<String>| async move {
                    blocking(move || results(&lab, Some(&id))).await
                },
            ),
        )
        .route(
            "/api/x/bench/plots/{id}/{name}",
            get(
                |State(lab): State<Arc<Lab>>, UrlPath((id, name)): UrlPath<(String, String)>| async move {
                    blocking(move || {
                        let svg = plot_svg(&lab, &id, &name)?;
                        Ok(json!({"run": id, "name": name, "svg": svg}))
                    })
                    .await
                },
            ),
        )
        .route(
            "/api/x/bench/sources",
            post(
                |State(lab): State<Arc<Lab>>, Json(body): Json<Value>| async move {
                    blocking(move || add_source(&lab, &body)).await
                },
            ),
        )
        .with_state(lab)
}

async fn status_route(State(lab): State<Arc<Lab>>) -> Answer {
    blocking(move || Ok(status(&lab))).await
}

async fn start_route(State(lab): State<Arc<Lab>>, body: Option<Json<Value>>) -> Answer {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    start(&lab, &body).map(Json)
}

/// File system work off the async runtime's threads.
async fn blocking(f: impl FnOnce() -> Result<Value, ApiError> + Send + 'static) -> Answer {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(err500)?
        .map(Json)
}

// ---- status and progress --------------------------------------------------------------------

/// The last complete progress event of a run.
fn last_event(file: &Path) -> Value {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null)
}

/// The last `n` lines of a file.
fn tail(file: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn run_status(run: &Run) -> Value {
    let progress = last_event(&run.dir.join("progress.jsonl"));
    let (state, elapsed) = match &run.exit {
        None => ("running", run.started.elapsed()),
        Some(e) => {
            let state = if e.success && run.dir.join("results.json").is_file() {
                "done"
            } else if run.cancel_requested || progress["phase"] == "cancelled" {
                "cancelled"
            } else {
                "failed"
            };
            (state, e.elapsed)
        }
    };
    let mut v = json!({
        "state": state,
        "run": run.id,
        "dir": run.dir.display().to_string(),
        "bench_instance": run.bench_instance,
        "started": run.started_at,
        "elapsed_s": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "configs": run.configs,
        "datapath": run.datapath,
        "pid": run.pid,
        "progress": progress,
    });
    if let Some(e) = &run.exit
        && state != "done"
    {
        let why = progress["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("lab bench ended ({})", e.status));
        v["error"] = json!(why);
        v["log_tail"] = json!(tail(&run.dir.join("bench.log"), 25));
    }
    v
}

fn status(lab: &Lab) -> Value {
    let guard = RUN.lock().expect("bench run");
    let mut v = match guard.as_ref() {
        Some(run) => run_status(run),
        None => json!({"state": "idle"}),
    };
    v["results_dir"] = json!(results_root(lab).display().to_string());
    v["bench_instance"] = json!(bench_instance(lab));
    v["known_configs"] = super::configs::all()
        .iter()
        .map(|c| json!({"id": c.id, "title": c.title, "paper": c.paper, "layer": c.layer}))
        .collect();
    v
}

// ---- starting and stopping ------------------------------------------------------------------

/// This binary, also after it was replaced by a rebuild (then `/proc/self/exe` names the old,
/// deleted file; the new one at the same path is the same program, newer).
fn lab_exe() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let s = exe.display().to_string();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

fn start(lab: &Arc<Lab>, body: &Value) -> Result<Value, ApiError> {
    let known: Vec<&str> = super::configs::all().iter().map(|c| c.id).collect();
    let configs: Vec<String> = match &body["configs"] {
        Value::Null => known.iter().map(|s| s.to_string()).collect(),
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::new(400, "configs: expected a list of configuration ids"))?,
        _ => {
            return Err(ApiError::new(
                400,
                "configs: expected a list of configuration ids",
            ));
        }
    };
    if let Some(bad) = configs.iter().find(|c| !known.contains(&c.as_str())) {
        return Err(ApiError::new(
            400,
            format!("unknown configuration {bad:?}; known: {}", known.join(", ")),
        ));
    }
    // In the bench's own order, whatever order they were asked in.
    let configs: Vec<String> = known
        .iter()
        .filter(|k| configs.iter().any(|c| c == *k))
        .map(|k| k.to_string())
        .collect();
    let datapath = body["datapath"].as_bool().unwrap_or(true);
    let what = match (configs.is_empty(), datapath) {
        (true, false) => {
            return Err(ApiError::new(
                400,
                "nothing to run: choose configurations, the datapath figures, or both",
            ));
        }
        (true, true) => "datapath",
        (false, true) => "all",
        (false, false) => "http",
    };

    let mut guard = RUN.lock().expect("bench run");
    if let Some(run) = guard.as_ref()
        && run.exit.is_none()
    {
        let st = run_status(run);
        return Err(ApiError::new(
            409,
            format!(
                "a benchmark run is already in progress (started {:.0} s ago); one run at a time",
                run.started.elapsed().as_secs_f64()
            ),
        )
        .with_details(st));
    }
    if *lab.shutdown.borrow() {
        return Err(ApiError::new(503, "the lab is shutting down"));
    }
    let instance = bench_instance(lab);
    if crate::paths::Paths::new(&instance).state_file().exists() {
        // Another run drives it (from the command line, or started before this lab process),
        // or it was kept with --keep: two runs on one bench lab would measure each other.
        return Err(ApiError::new(
            409,
            format!(
                "the bench lab {instance:?} is already up: a run from the command line or from                  before this lab restarted is using it, or it was kept. Wait for it, or take it                  down with `lab --instance {instance} down`"
            ),
        ));
    }
    let root = results_root(lab);
    let base = super::timestamp_dir();
    let (id, dir) = (1..100)
        .map(|n| {
            let id = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let dir = root.join(&id);
            (id, dir)
        })
        .find(|(_, d)| !d.exists())
        .ok_or_else(|| err500("no free results directory"))?;
    std::fs::create_dir_all(&dir).map_err(|e| err500(format!("{}: {e}", dir.display())))?;
    let log = std::fs::File::create(dir.join("bench.log")).map_err(err500)?;
    let exe = lab_exe().map_err(err500)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["bench", what, "--quick", "--bench-instance", &instance])
        .arg("--out")
        .arg(&dir)
        .arg("--progress-json")
        .arg(dir.join("progress.jsonl"));
    if !configs.is_empty() && configs.len() < known.len() {
        cmd.arg("--configs").arg(configs.join(","));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(err500)?)
        .stderr(log)
        // Its own process group: only the lab's own SIGTERM (cancel, shutdown) reaches it.
        .process_group(0)
        // It outlives this handle if the lab goes away: it always takes its own lab down.
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|e| err500(format!("starting lab bench: {e}")))?;
    let pid = child.id();
    *guard = Some(Run {
        id: id.clone(),
        dir,
        bench_instance: instance,
        started: Instant::now(),
        started_at: model::time::rfc3339::now(),
        pid,
        configs,
        datapath,
        cancel_requested: false,
        exit: None,
    });
    let st = guard.as_ref().map(run_status).unwrap_or_default();
    drop(guard);

    let mut shutdown = lab.shutdown.subscribe();
    tokio::spawn(async move {
        let mut signalled = false;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                _ = shutdown.wait_for(|down| *down), if !signalled => {
                    // The lab is going down: the run stops after its current step and takes
                    // its own lab down.
                    signalled = true;
                    terminate(pid);
                }
            }
        };
        let mut guard = RUN.lock().expect("bench run");
        if let Some(run) = guard.as_mut().filter(|r| r.id == id) {
            run.exit = Some(Exit {
                success: status.as_ref().is_ok_and(|s| s.success()),
                status: match &status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                },
                elapsed: run.started.elapsed(),
            });
        }
    });
    Ok(st)
}

fn terminate(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn cancel() -> Result<Value, ApiError> {
    let mut guard = RUN.lock().expect("bench run");
    match guard.as_mut() {
        Some(run) if run.exit.is_none() => {
            run.cancel_requested = true;
            terminate(run.pid);
            Ok(json!({"cancelling": run.id}))
        }
        _ => Err(ApiError::new(409, "no benchmark run is in progress")),
    }
}

// ---- results --------------------------------------------------------------------------------

/// A run with results the page can show.
struct Listed {
    id: String,
    dir: PathBuf,
    origin: &'static str,
    results: Value,
}

impl Listed {
    fn summary(&self) -> Value {
        let r = &self.results;
        let configs = r["configs"].as_array().map_or(&[][..], Vec::as_slice);
        json!({
            "id": self.id,
            "dir": self.dir.display().to_string(),
            "origin": self.origin,
            "preset": r["preset"],
            "started": r["started"],
            "finished": r["finished"],
            "configs": configs.len(),
            "measured": configs.iter().filter(|c| c["status"] == "measured").count(),
            "datapath": !r["datapath"].is_null(),
        })
    }
}

/// `results.json` of a directory, if it is a bench's.
fn read_results(dir: &Path) -> Option<Value> {
    let file = dir.join("results.json");
    let meta = std::fs::metadata(&file).ok()?;
    if !meta.is_file() || meta.len() > MAX_RESULTS_BYTES {
        return None;
    }
    let v: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    v["schema"]
        .as_str()
        .is_some_and(|s| s.starts_with("lab-bench/"))
        .then_some(v)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 100
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn sources_file(lab: &Lab) -> PathBuf {
    results_root(lab).join("sources.json")
}

fn sources(lab: &Lab) -> Vec<PathBuf> {
    std::fs::read(sources_file(lab))
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<PathBuf>>(&b).ok())
        .unwrap_or_default()
}

/// Every run with results: the page's own (and any `--out` under the results directory), then
/// the directories added, newest first.
fn listing(lab: &Lab) -> Vec<Value> {
    runs(lab).iter().map(Listed::summary).collect()
}

fn runs(lab: &Lab) -> Vec<Listed> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(results_root(lab)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !valid_id(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(results) = read_results(&e.path()) {
                out.push(Listed {
                    id: name,
                    dir: e.path(),
                    origin: "page",
                    results,
                });
            }
        }
    }
    for (i, dir) in sources(lab).into_iter().enumerate() {
        if let Some(results) = read_results(&dir) {
            out.push(Listed {
                id: format!("dir-{}", i + 1),
                dir,
                origin: "directory",
                results,
            });
        }
    }
    let key = |l: &Listed| {
        l.results["finished"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    out.sort_by_key(|l| std::cmp::Reverse(key(l)));
    out
}

fn results(lab: &Lab, id: Option<&str>) -> Result<Value, ApiError> {
    let all = runs(lab);
    let found = match id {
        None => all.first(),
        Some(id) => Some(
            all.iter()
                .find(|l| l.id == id)
                .ok_or_else(|| ApiError::not_found(format!("no bench results {id:?}")))?,
        ),
    };
    let Some(run) = found else {
        return Ok(json!({"run": null, "runs": []}));
    };
    let plots: Vec<&str> = PLOTS
        .iter()
        .copied()
        .filter(|p| plot_file(&run.dir, p).is_some())
        .collect();
    Ok(json!({
        "run": run.summary(),
        "runs": all.iter().map(Listed::summary).collect::<Vec<_>>(),
        "plots": plots,
        "results": run.results,
    }))
}

/// A plot of a run's directory: a regular file (not a symlink) of a known name and sane size.
fn plot_file(dir: &Path, name: &str) -> Option<PathBuf> {
    if !PLOTS.contains(&name) {
        return None;
    }
    let file = dir.join(name);
    let meta = std::fs::symlink_metadata(&file).ok()?;
    (meta.file_type().is_file() && meta.len() <= MAX_PLOT_BYTES).then_some(file)
}

/// Elements plotters' SVG backend writes.
const SVG_ELEMENTS: [&str; 12] = [
    "svg", "g", "rect", "line", "polyline", "polygon", "path", "circle", "ellipse", "text",
    "tspan", "title",
];

/// SVG as the bench writes it: one `<svg>` document of drawing elements only, and no event
/// handler, link, reference or `javascript:` anywhere.
pub fn plain_svg(text: &str) -> bool {
    let t = text.trim_start();
    let t = match t.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r).trim_start(),
        None => t,
    };
    if !t.starts_with("<svg") || text.to_ascii_lowercase().contains("javascript:") {
        return false;
    }
    let b = t.as_bytes();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|c| *c == b'<') {
        let mut j = i + off + 1;
        if b.get(j) == Some(&b'/') {
            j += 1;
        }
        let name_len = b[j..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let name = &t[j..j + name_len];
        if !SVG_ELEMENTS.contains(&name) {
            return false;
        }
        j += name_len;
        // Attributes up to the unquoted `>`: only names, checked; values skipped.
        let mut quote = None;
        let mut attr = String::new();
        loop {
            let Some(&c) = b.get(j) else { return false };
            j += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => break,
                None if c.is_ascii_alphanumeric() || c == b'-' || c == b':' || c == b'_' => {
                    attr.push(c.to_ascii_lowercase() as char)
                }
                None => {
                    if c == b'=' && (attr.starts_with("on") || attr.ends_with("href")) {
                        return false;
                    }
                    if !c.is_ascii_whitespace() {
                        attr.clear();
                    } else if !attr.is_empty() {
                        // `name =` is still an attribute: keep the name until something else.
                        let next = b[j..].iter().find(|c| !c.is_ascii_whitespace());
                        if next != Some(&b'=') {
                            attr.clear();
                        }
                    }
                }
            }
        }
        i = j;
    }
    true
}

/// One of a run's plots, checked to be plain SVG.
pub fn plot_svg(lab: &Lab, id: &str, name: &str) -> Result<String, ApiError> {
    if !PLOTS.contains(&name) {
        return Err(ApiError::not_found(format!(
            "no plot {name:?}; the plots are {}",
            PLOTS.join(", ")
        )));
    }
    let all = runs(lab);
    let run = all
        .iter()
        .find(|l| l.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no bench results {id:?}")))?;
    let file = plot_file(&run.dir, name)
        .ok_or_else(|| ApiError::not_found(format!("run {id:?} has no {name}")))?;
    let svg = std::fs::read_to_string(&file).map_err(err500)?;
    if !plain_svg(&svg) {
        return Err(ApiError::new(
            422,
            format!("{name} of run {id:?} is not a plain SVG plot as lab bench writes them"),
        ));
    }
    Ok(svg)
}

fn add_source(lab: &Lab, body: &Value) -> Result<Value, ApiError> {
    let dir = body["dir"]
        .as_str()
        .filter(|d| Path::new(d).is_absolute())
        .ok_or_else(|| {
            ApiError::new(
                400,
                "expected {\"dir\": \"/absolute/path\"} (a lab bench --out directory)",
            )
        })?;
    let dir = std::fs::canonicalize(dir).map_err(|e| ApiError::new(400, format!("{dir}: {e}")))?;
    if read_results(&dir).is_none() {
        return Err(ApiError::new(
            400,
            format!("{} has no results.json written by lab bench", dir.display()),
        ));
    }
    let mut list = sources(lab);
    let i = match list.iter().position(|d| *d == dir) {
        Some(i) => i,
        None => {
            list.push(dir.clone());
            std::fs::create_dir_all(results_root(lab)).map_err(err500)?;
            let tmp = sources_file(lab).with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&list).map_err(err500)?)
                .map_err(err500)?;
            std::fs::rename(&tmp, sources_file(lab)).map_err(err500)?;
            list.len() - 1
        }
    };
    Ok(json!({"id": format!("dir-{}", i + 1), "dir": dir.display().to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_must_be_plain_svg() {
        let ok = r##"<svg width="960" height="600" viewBox="0 0 960 600" xmlns="http://www.w3.org/2000/svg">
<rect x="0" y="0" width="960" height="600" opacity="1" fill="#FFFFFF" stroke="none"/>
<text x="480" y="20" font-family="sans-serif" font-size="20" opacity="1" fill="#000000">Latency (font: none) online=1</text>
</svg>"##;
        assert!(plain_svg(ok));
        for real in [
            include_str!("../../../docs/benchmarks/latency.svg"),
            include_str!("../../../docs/benchmarks/latency-l3-l4.svg"),
            include_str!("../../../docs/benchmarks/throughput.svg"),
            include_str!("../../../docs/benchmarks/datapath.svg"),
        ] {
            assert!(plain_svg(real), "the bench's own plots pass");
        }
        assert!(plain_svg(&format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{ok}"
        )));
        for bad in [
            "<html><svg></svg></html>",
            r#"<svg><script>alert(1)</script></svg>"#,
            r#"<svg onload="alert(1)"></svg>"#,
            "<svg>\n<rect\tONCLICK = \"x()\"/></svg>",
            r#"<svg><a href="javascript:alert(1)"><text>x</text></a></svg>"#,
            r#"<svg><image href="http://example.com/x.png"/></svg>"#,
            r#"<svg><foreignObject><div/></foreignObject></svg>"#,
            "<!DOCTYPE svg [<!ENTITY x \"y\">]><svg></svg>",
            r#"<svg><text title="a>b" onload="x()">t</text></svg>"#,
            r#"<svg><use xlink:href="x.svg#a"/></svg>"#,
            r#"<svg><rect/><style>*{}</style></svg>"#,
            "<svg><rect",
        ] {
            assert!(!plain_svg(bad), "{bad}");
        }
    }

    #[test]
    fn run_ids_cannot_name_other_directories() {
        assert!(valid_id("20261121-231500"));
        assert!(valid_id("20261121-231500-2"));
        for bad in ["", ".", "..", "../etc", "a/b", ".hidden", "a b", "x\0"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn plot_files_are_known_names_and_not_symlinks() {
        let dir = std::env::temp_dir().join(format!("lab-bench-web-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("latency.svg"), "<svg></svg>").unwrap();
        std::fs::write(dir.join("results.json"), "{}").unwrap();
        let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("throughput.svg"));
        assert!(plot_file(&dir, "latency.svg").is_some());
        assert!(plot_file(&dir, "throughput.svg").is_none(), "a symlink");
        assert!(plot_file(&dir, "results.json").is_none(), "not a plot");
        assert!(plot_file(&dir, "../latency.svg").is_none());
        assert!(plot_file(&dir, "datapath.svg").is_none(), "absent");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
