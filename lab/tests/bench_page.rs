//! The Benchmark page in a real browser (headless Chromium, see `browser.rs`): a quick run
//! started from the page with the keyboard, a second click told that a run is in progress, the
//! progress bar moving through the configurations and the datapath measurements, then the
//! results table, the goals, the datapath table and the four plots; plot URLs that try to leave
//! the results directory are refused; the page fits a narrow window; screenshots go to
//! `target/screenshots/bench*.png`. The bench's own lab (`bench-<instance>`) is gone afterwards.
//!
//! To stay short the run is the quick preset with two configurations ticked instead of ten
//! (about 20 s instead of a minute): the page's configuration checkboxes are what a user would
//! use for the same purpose, and the full quick run is covered by `bench.rs`.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use fantoccini::{Client, Locator, key::Key};
use serde_json::{Value, json};

use crate::browser::{
    fits_window_width, js, load, screenshot_dir, session, shot, until, viewport, web_address,
};
use crate::harness::{LAB, TestLab, leftovers};

/// The configurations ticked for the run.
const CONFIGS: [&str; 2] = ["none", "l4"];

/// A one-pod cluster: the page's lab only serves the page; the bench brings up its own.
const MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: hello
  labels:
    app: hello
spec:
  containers:
  - name: echo
    image: lab/echo
";

/// `[value, max, step text, elapsed text, results shown]` of the page.
const PROGRESS: &str = "const b = document.getElementById('bench-progress'); \
    return [b.value, b.max, document.getElementById('bench-step').textContent, \
            document.getElementById('bench-elapsed').textContent, \
            !!document.querySelector('#bench-results tr[data-config]')];";

async fn fetch_status(c: &Client, url: &str) -> Result<Value> {
    Ok(c.execute_async(
        "const done = arguments[arguments.length - 1]; \
         fetch(arguments[0]).then(r => done([r.status, r.headers.get('content-type') || '']), e => done([0, String(e)]));",
        vec![json!(url)],
    )
    .await?)
}

async fn walk(c: &Client, base: &str) -> Result<()> {
    viewport(c, 1280, 800).await?;
    let ms = load(c, &format!("{base}/bench")).await?;
    ensure!(ms < 2000.0, "the Benchmark page took {ms:.0} ms to load");
    let current = js(
        c,
        "return document.querySelector('header nav a[aria-current=\"page\"]').textContent",
        vec![],
    )
    .await?;
    ensure!(current == "Benchmark", "the nav marks {current}");
    until(
        c,
        "the configuration choices",
        10,
        "return document.querySelectorAll('input[name=\"config\"]').length === 10",
    )
    .await?;
    until(
        c,
        "'no results yet'",
        10,
        "return document.getElementById('bench-results').textContent.includes('No results yet')",
    )
    .await?;
    js(
        c,
        "for (const b of document.querySelectorAll('input[name=\"config\"]')) \
           if (b.checked !== arguments[0].includes(b.value)) b.click();",
        vec![json!(CONFIGS)],
    )
    .await?;

    // Start with the keyboard: from the datapath option, Tab reaches Start, Enter presses it.
    js(c, "document.getElementById('opt-datapath').focus()", vec![]).await?;
    c.active_element().await?.send_keys(&Key::Tab).await?;
    let on = js(c, "return document.activeElement.id", vec![]).await?;
    ensure!(on == "bench-start", "Tab from the option reached {on}");
    c.active_element().await?.send_keys(&Key::Enter).await?;
    until(
        c,
        "the progress bar",
        10,
        "return !document.getElementById('bench-run').hidden",
    )
    .await?;
    // One run at a time: a second click is told so.
    c.find(Locator::Id("bench-start")).await?.click().await?;
    let busy = until(
        c,
        "the in-progress message",
        10,
        "const t = document.getElementById('bench-status').textContent; \
         return t.includes('already in progress') ? t : null",
    )
    .await?;
    ensure!(
        busy.as_str().unwrap_or_default().contains("elapsed"),
        "{busy}"
    );

    // The bar moves until the results are shown.
    let mut values: Vec<f64> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut shot_taken = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let p = js(c, PROGRESS, vec![]).await?;
        let (value, max) = (p[0].as_f64().unwrap_or(-1.0), p[1].as_f64().unwrap_or(0.0));
        if p[4] == true {
            break;
        }
        if values.last() != Some(&value) {
            values.push(value);
        }
        let text = p[2].as_str().unwrap_or_default().to_owned();
        if texts.last() != Some(&text) {
            texts.push(text.clone());
        }
        let elapsed = p[3].as_str().unwrap_or_default();
        ensure!(
            elapsed.is_empty() || elapsed.ends_with(" elapsed"),
            "elapsed shows {elapsed:?}"
        );
        if !shot_taken && value > 0.0 && value < max {
            shot(c, "bench-running").await?;
            shot_taken = true;
        }
        if Instant::now() > deadline {
            bail!("no results after 240 s; the bar went {values:?} through {texts:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        values.windows(2).all(|w| w[0] < w[1]) && values.len() >= 3,
        "the bar should move forward step by step: {values:?} ({texts:?})"
    );
    for want in [
        "Configuration 1 of 2",
        "Configuration 2 of 2",
        "Datapath figures: measurement",
    ] {
        ensure!(
            texts.iter().any(|t| t.contains(want)),
            "never showed {want:?}: {texts:?}"
        );
    }
    let done = js(
        c,
        "return document.getElementById('bench-status').textContent",
        vec![],
    )
    .await?;
    ensure!(
        done.as_str().unwrap_or_default().contains("finished"),
        "{done}"
    );

    // The table: requested against achieved, saturation, percentiles, max throughput and ratio.
    let rows = js(
        c,
        "return [...document.querySelectorAll('#bench-results tr[data-config]')]\
           .map(r => [r.dataset.config, ...[...r.cells].slice(1).map(c => c.textContent)])",
        vec![],
    )
    .await?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    ensure!(
        rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>()
            == json!(CONFIGS).as_array().cloned().unwrap(),
        "rows: {rows:?}"
    );
    for r in &rows {
        let cell = |i: usize| r[i].as_str().unwrap_or_default().to_owned();
        ensure!(cell(1) == "500", "requested 500 req/s: {r}");
        ensure!(!cell(2).is_empty(), "achieved: {r}");
        ensure!(cell(3) == "no" || cell(3) == "saturated", "{r}");
        for i in 4..=6 {
            ensure!(
                cell(i).ends_with("µs") || cell(i).ends_with("ms") || cell(i).ends_with(" s"),
                "percentile {i}: {r}"
            );
        }
        ensure!(!cell(7).is_empty() && cell(8).ends_with('%'), "{r}");
    }
    ensure!(
        rows[0][8] == "100%",
        "no policy is 100% of itself: {:?}",
        rows[0]
    );
    let goals = js(
        c,
        "return [...document.querySelectorAll('#bench-results tr[class^=\"goal-\"]')].map(r => r.cells[2].textContent)",
        vec![],
    )
    .await?;
    let goals = goals.as_array().cloned().unwrap_or_default();
    ensure!(goals.len() == 6, "six goals: {goals:?}");
    ensure!(
        goals
            .iter()
            .all(|g| ["✓ met", "✗ missed", "not evaluated"]
                .contains(&g.as_str().unwrap_or_default())),
        "{goals:?}"
    );
    let rules = js(
        c,
        "return [...document.querySelectorAll('#bench-results tr[data-rules]')].map(r => r.dataset.rules + ':' + r.cells[1].textContent)",
        vec![],
    )
    .await?;
    let rules = rules.as_array().cloned().unwrap_or_default();
    ensure!(rules.len() == 3, "baseline, 1 and 1000 rules: {rules:?}");
    ensure!(
        rules.iter().all(|r| {
            let r = r.as_str().unwrap_or_default();
            r.split_once(':').is_some_and(|(_, ns)| !ns.is_empty())
        }),
        "eBPF ns/packet for every point: {rules:?}"
    );
    let plots = until(
        c,
        "the four plots",
        20,
        "const i = [...document.querySelectorAll('.plot img')]; \
         return i.length === 4 && i.every(x => x.complete && x.naturalWidth > 0) \
           ? i.map(x => x.closest('figure').dataset.plot) : null",
    )
    .await?;
    ensure!(
        plots
            == json!([
                "latency.svg",
                "latency-l3-l4.svg",
                "throughput.svg",
                "datapath.svg"
            ]),
        "{plots}"
    );
    js(
        c,
        "document.getElementById('results-title').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "bench").await?;
    js(
        c,
        "document.querySelector('.plots').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "bench-plots").await?;

    // Plots are served from a run's directory by name only.
    let run = js(
        c,
        "return new URL(document.querySelector('.plot img').src).pathname.split('/')[3]",
        vec![],
    )
    .await?;
    let run = run.as_str().unwrap_or_default().to_owned();
    let ok = fetch_status(c, &format!("/bench/plots/{run}/latency.svg")).await?;
    ensure!(ok == json!([200, "image/svg+xml"]), "{ok}");
    for bad in [
        format!("/bench/plots/{run}/..%2Fresults.json"),
        format!("/bench/plots/{run}/results.json"),
        format!("/bench/plots/{run}/%2e%2e%2f%2e%2e%2fstate.json"),
        "/bench/plots/..%2F..%2F..%2Fetc/passwd".to_owned(),
        "/bench/plots/..%2F/latency.svg".to_owned(),
        format!("/api/x/bench/plots/{run}/..%2Fresults.json"),
        "/api/x/bench/plots/../latency.svg".to_owned(),
    ] {
        let got = fetch_status(c, &bad).await?;
        ensure!(got[0] != 200 && got[0] != 0, "{bad} answered {got}");
    }

    // A narrow window: everything fits its width (tables scroll inside their frame).
    viewport(c, 420, 800).await?;
    load(c, &format!("{base}/bench")).await?;
    until(
        c,
        "the results",
        10,
        "return document.querySelectorAll('.plot img').length === 4",
    )
    .await?;
    fits_window_width(c, "/bench").await?;
    js(
        c,
        "document.getElementById('results-title').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "narrow-bench").await?;
    Ok(())
}

#[test]
fn the_benchmark_page_runs_a_quick_bench_and_shows_its_results() {
    let manifest = std::env::temp_dir().join(format!("{}.yaml", testkit::unique_name("bp")));
    std::fs::write(&manifest, MANIFEST).unwrap();
    let lab = TestLab::up_with(&[&manifest]);
    let _ = std::fs::remove_file(&manifest);
    let base = web_address(&lab);
    let bench = format!("bench-{}", lab.instance);
    let outcome = session("failure-bench", async |c| walk(c, &base).await);
    // Taking the page's lab down stops a run still going (it takes its own lab down).
    drop(lab);
    let gone = testkit::wait_for(Duration::from_secs(90), || {
        leftovers(&bench).is_empty().then_some(())
    });
    if gone.is_none() {
        let _ = std::process::Command::new(LAB)
            .args(["--instance", &bench, "down"])
            .output();
    }
    if let Err(e) = outcome {
        panic!(
            "{e:#}\n(see {}/failure-bench.png)",
            screenshot_dir().display()
        );
    }
    assert!(
        gone.is_some(),
        "the bench lab {bench} was left behind: {:?}",
        leftovers(&bench)
    );
}
