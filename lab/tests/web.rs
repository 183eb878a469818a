//! The web lab in a real browser: headless Chromium driven over WebDriver (fantoccini) through
//! the cluster view with live flows, lesson 1 step by step, an exercise graded wrong and then
//! right, and the policy editor's located errors. It prints each page's load time (navigation
//! start to the load event) as a figure, not a pass/fail: timing goals belong in benchmarks.
//! Screenshots of the main pages go to `target/screenshots/`. Chromedriver and Chromium are this
//! test's own processes (see `browser.rs`) and are killed when it ends, also when it fails.

use anyhow::{Result, ensure};
use fantoccini::{Client, Locator, key::Key};
use serde_json::json;

use crate::browser::{
    fits_window_width, js, live_flows, load, screenshot_dir, session, shot, until, viewport,
    web_address,
};
use crate::harness::TestLab;

/// Sets the editor's text as a paste would (the editor's Enter key adds indentation, so
/// typing YAML line by line would indent it twice).
async fn paste(c: &Client, text: &str) -> Result<()> {
    js(
        c,
        "const t = document.querySelector('textarea[data-editor]'); t.focus(); t.value = arguments[0]; \
         t.dispatchEvent(new Event('input'));",
        vec![json!(text)],
    )
    .await?;
    Ok(())
}

const RIGHT_POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: landing-rights
spec:
  endpointSelector:
    matchLabels:
      class: deathstar
  ingress:
  - fromEndpoints:
    - matchLabels:
        org: empire
    toPorts:
    - ports:
      - port: \"80\"
        protocol: TCP
";

const BAD_POLICY: &str = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: typo
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoint:
    - {}
";

/// Waits for lesson step `n`'s result, which must be "as expected"; returns its text.
async fn step_as_expected(c: &Client, n: u64, secs: u64, lesson: &str) -> Result<String> {
    let badge = until(
        c,
        &format!("step {n}'s result"),
        secs,
        &format!(
            "const b = document.querySelector('#step-{n} .result .badge'); \
             return b && !b.classList.contains('running') ? b.textContent : null;"
        ),
    )
    .await?;
    let text = js(
        c,
        &format!("return document.querySelector('#step-{n} .result').innerText"),
        vec![],
    )
    .await?;
    let text = text.as_str().unwrap_or_default().to_owned();
    ensure!(badge == "as expected", "{lesson}step {n}: {text}");
    Ok(text)
}

async fn walk(c: &Client, lab: &TestLab, base: &str, loads: &mut Vec<(String, f64)>) -> Result<()> {
    viewport(c, 1280, 800).await?;

    // The cluster view: pods, services, and flows arriving live over server-sent events.
    loads.push(("/".into(), load(c, &format!("{base}/")).await?));
    until(c, "the pods table", 10, "return [...document.querySelectorAll('#pods tbody tr')].some(r => r.textContent.includes('xwing'))").await?;
    until(
        c,
        "the services table",
        10,
        "return document.querySelector('#services tbody').textContent.includes('10.96.0.10')",
    )
    .await?;
    live_flows(c).await?;
    let landed = lab.ship("xwing", &["land"]);
    ensure!(landed["status"] == 200, "{landed}");
    let row = until(c, "the xwing's flow in the live list", 10,
        "const b = [...document.querySelectorAll('#flow-list button.flow')].find(b => b.textContent.includes('xwing → deathstar') && b.dataset.verdict === 'FORWARDED'); \
         if (!b) return null; b.click(); return b.textContent;").await?;
    ensure!(row.as_str().unwrap_or_default().contains(":80"), "{row}");
    let explained = until(
        c,
        "the flow's detail",
        5,
        "const e = document.querySelector('#detail .explanation'); return e && e.textContent",
    )
    .await?;
    ensure!(
        explained
            .as_str()
            .unwrap_or_default()
            .contains("no policy selects"),
        "{explained}"
    );
    let detail = js(
        c,
        "return document.getElementById('detail').innerText",
        vec![],
    )
    .await?;
    let detail = detail.as_str().unwrap_or_default();
    ensure!(
        detail.contains("Destination") && !detail.contains("[object"),
        "the detail lists the record's fields: {detail}"
    );
    until(
        c,
        "an edge in the topology",
        5,
        "return document.querySelectorAll('#topology .edge.v-forwarded').length > 0",
    )
    .await?;
    shot(c, "cluster").await?;

    // Lesson 1, step by step; the first Run button is reached with the keyboard alone.
    loads.push((
        "/lessons".into(),
        load(c, &format!("{base}/lessons")).await?,
    ));
    shot(c, "lessons").await?;
    loads.push((
        "/lessons/01-l3-ingress".into(),
        load(c, &format!("{base}/lessons/01-l3-ingress")).await?,
    ));
    let steps = js(
        c,
        "return document.querySelectorAll('button[data-run]').length",
        vec![],
    )
    .await?;
    ensure!(steps == 6, "lesson 1 has six steps");
    let mut reached = false;
    for _ in 0..40 {
        c.active_element().await?.send_keys(&Key::Tab).await?;
        let on = js(c, "return document.activeElement.dataset.run || ''", vec![]).await?;
        if on == "1" {
            reached = true;
            break;
        }
    }
    ensure!(reached, "Tab never reached the first Run button");
    c.active_element().await?.send_keys(&Key::Enter).await?;
    for n in 1..=6 {
        if n > 1 {
            c.find(Locator::Css(&format!("button[data-run=\"{n}\"]")))
                .await?
                .click()
                .await?;
        }
        step_as_expected(c, n, 30, "").await?;
    }
    let step5 = js(
        c,
        "return document.querySelector('#step-5 .result').innerText",
        vec![],
    )
    .await?;
    let step5 = step5.as_str().unwrap_or_default();
    ensure!(
        step5.contains("timed out") && step5.contains("DROPPED"),
        "{step5}"
    );
    let progress = js(
        c,
        "return document.querySelector('[data-progress]').textContent",
        vec![],
    )
    .await?;
    ensure!(
        progress == "6 of 6 steps done in this browser.",
        "{} is not {}",
        progress,
        "6 of 6 steps done in this browser."
    );
    js(
        c,
        "document.getElementById('step-5').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "lesson").await?;
    // A step's flow opens its full record: the tiefighter's landing was allowed by rule1.
    js(c, "[...document.querySelectorAll('#step-4 .result button.flow')].find(b => b.textContent.includes('allowed by policy rule1')).click()", vec![]).await?;
    let record = until(
        c,
        "the flow dialog",
        5,
        "const d = document.getElementById('flow-dialog'); return d.open && d.innerText",
    )
    .await?;
    let record = record.as_str().unwrap_or_default();
    ensure!(
        record.contains("allowed at ingress by")
            && record.contains("rule1")
            && record.contains("ingress[0]")
            && record.contains("Destination")
            && !record.contains("[object"),
        "the record names the policy and rule: {record}"
    );
    shot(c, "lesson-flow").await?;
    c.active_element().await?.send_keys(&Key::Escape).await?;
    until(
        c,
        "the dialog to close",
        5,
        "return !document.getElementById('flow-dialog').open",
    )
    .await?;

    // An exercise: the template lets the X-wing in (wrong), the right policy passes.
    loads.push((
        "/exercises".into(),
        load(c, &format!("{base}/exercises")).await?,
    ));
    let ex = format!("{base}/exercises/1-landing-rights");
    loads.push(("/exercises/1-landing-rights".into(), load(c, &ex).await?));
    c.find(Locator::Id("check")).await?.click().await?;
    let status = until(c, "the first check", 60, "const s = document.getElementById('check-status').textContent; return s.includes('expectations right') ? s : null").await?;
    ensure!(
        status.as_str().unwrap_or_default().starts_with("2 of 4"),
        "{status}"
    );
    let wrong = js(
        c,
        "return [...document.querySelectorAll('#expectations tbody tr')].map(r => r.className)",
        vec![],
    )
    .await?;
    ensure!(
        wrong == json!(["right", "right", "wrong", "wrong"]),
        "rows graded {wrong}"
    );
    let cell = js(c, "return document.querySelector('#expectations tr[data-probe=\"3\"] .cell-result').innerText", vec![]).await?;
    let cell = cell.as_str().unwrap_or_default();
    ensure!(
        cell.contains("FORWARDED") && cell.contains("landing-rights") && cell.contains("Hint:"),
        "a wrong cell shows the flow that explains it and a hint: {cell}"
    );
    js(
        c,
        "document.getElementById('expectations').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "exercise-wrong").await?;
    // The right policy, and Check pressed from the keyboard: Tab from the editor to Check.
    paste(c, RIGHT_POLICY).await?;
    until(
        c,
        "the editor to accept the policy",
        10,
        "return document.querySelector('.validity').textContent.startsWith('Valid')",
    )
    .await?;
    let mut on_check = false;
    for _ in 0..5 {
        c.active_element().await?.send_keys(&Key::Tab).await?;
        if js(c, "return document.activeElement.id", vec![]).await? == "check" {
            on_check = true;
            break;
        }
    }
    ensure!(on_check, "Tab from the editor should reach Check");
    c.active_element().await?.send_keys(&Key::Enter).await?;
    let status = until(c, "the second check", 60, "const s = document.getElementById('check-status').textContent; return s.startsWith('4 of 4') ? s : null").await?;
    ensure!(
        status.as_str().unwrap_or_default().contains("goal is met"),
        "{status}"
    );
    let badge = js(
        c,
        "return document.getElementById('ex-status').textContent",
        vec![],
    )
    .await?;
    ensure!(badge == "passed ✓", "{} is not {}", badge, "passed ✓");
    js(
        c,
        "document.getElementById('expectations').scrollIntoView()",
        vec![],
    )
    .await?;
    shot(c, "exercise-right").await?;

    // The policy editor: the checked policy is active; a typo is shown at its line.
    loads.push((
        "/policies".into(),
        load(c, &format!("{base}/policies")).await?,
    ));
    until(
        c,
        "the active policy",
        10,
        "return document.getElementById('active').textContent.includes('default/landing-rights')",
    )
    .await?;
    paste(c, BAD_POLICY).await?;
    let lines = until(c, "the error at its line", 10, "const l = [...document.querySelectorAll('.gutter .err')].map(e => e.textContent); return l.length ? l : null").await?;
    ensure!(lines == json!(["8"]), "{} is not {}", lines, json!(["8"]));
    let msg = js(
        c,
        "return document.querySelector('.marks .err').textContent",
        vec![],
    )
    .await?;
    ensure!(
        msg.as_str()
            .unwrap_or_default()
            .contains("unknown field `fromEndpoint`"),
        "{msg}"
    );
    shot(c, "policies").await?;
    // Audit mode from the page, then an X-wing landing shows up live as AUDIT.
    c.find(Locator::Css("#active input[data-role=\"audit\"]"))
        .await?
        .click()
        .await?;
    until(c, "audit mode on", 10, "return document.getElementById('active').textContent.includes('audit mode') && document.querySelector('#active input[data-role=\"audit\"]').checked").await?;
    load(c, &format!("{base}/")).await?;
    live_flows(c).await?;
    let audited = lab.ship("xwing", &["land"]);
    ensure!(audited["status"] == 200, "audit mode forwards: {audited}");
    until(c, "an AUDIT flow in the live list", 10, "return [...document.querySelectorAll('#flow-list button.flow')].some(b => b.dataset.verdict === 'AUDIT' && b.textContent.includes('xwing'))").await?;
    until(
        c,
        "an audit edge in the topology",
        5,
        "return document.querySelectorAll('#topology .edge.v-audit').length > 0",
    )
    .await?;
    shot(c, "cluster-audit").await?;

    // A narrow window: everything still fits its width.
    viewport(c, 420, 800).await?;
    for (name, path) in [
        ("narrow-cluster", "/"),
        ("narrow-lesson", "/lessons/01-l3-ingress"),
    ] {
        load(c, &format!("{base}{path}")).await?;
        if path == "/" {
            until(
                c,
                "the flow history",
                10,
                "return document.querySelectorAll('#flow-list button.flow').length > 0",
            )
            .await?;
        }
        fits_window_width(c, path).await?;
        shot(c, name).await?;
    }
    Ok(())
}

#[test]
fn the_web_lab_in_a_browser() {
    let lab = TestLab::up();
    let base = web_address(&lab);
    let mut loads = Vec::new();
    let outcome = session("failure", async |c| walk(c, &lab, &base, &mut loads).await);
    for (page, ms) in &loads {
        println!("page load {page}: {ms:.0} ms");
    }
    if let Err(e) = outcome {
        panic!("{e:#}\n(see {}/failure.png)", screenshot_dir().display());
    }
}

/// Lesson 7 (NetworkPolicy to CiliumNetworkPolicy), every step run from its button, then
/// exercise 5 graded with its template (wrong) and a right NetworkPolicy.
async fn networkpolicy_lesson(c: &Client, base: &str) -> Result<()> {
    load(c, &format!("{base}/lessons/07-networkpolicy")).await?;
    let steps = js(
        c,
        "return document.querySelectorAll('button[data-run]').length",
        vec![],
    )
    .await?
    .as_u64()
    .unwrap_or_default();
    ensure!(steps >= 10, "lesson 7 has {steps} steps");
    for n in 1..=steps {
        c.find(Locator::Css(&format!("button[data-run=\"{n}\"]")))
            .await?
            .click()
            .await?;
        let text = step_as_expected(c, n, 60, "lesson 7 ").await?;
        if n == 4 {
            // The X-wing's drop names the NetworkPolicy.
            ensure!(
                text.contains("DROPPED") && text.contains("deathstar-knp"),
                "{text}"
            );
        }
    }
    shot(c, "lesson-networkpolicy").await?;

    let ex = format!("{base}/exercises/5-networkpolicy");
    load(c, &ex).await?;
    c.find(Locator::Id("check")).await?.click().await?;
    let status = until(c, "the template's check", 60, "const s = document.getElementById('check-status').textContent; return s.includes('expectations right') ? s : null").await?;
    ensure!(
        status.as_str().unwrap_or_default().starts_with("1 of 3"),
        "{status}"
    );
    paste(c, KNP_POLICY).await?;
    until(
        c,
        "the editor to accept the NetworkPolicy",
        10,
        "return document.querySelector('.validity').textContent.startsWith('Valid')",
    )
    .await?;
    c.find(Locator::Id("check")).await?.click().await?;
    let status = until(c, "the second check", 60, "const s = document.getElementById('check-status').textContent; return s.startsWith('3 of 3') ? s : null").await?;
    ensure!(
        status.as_str().unwrap_or_default().contains("goal is met"),
        "{status}"
    );
    shot(c, "exercise-networkpolicy").await?;
    Ok(())
}

const KNP_POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deathstar-knp
spec:
  podSelector:
    matchLabels:
      class: deathstar
  ingress:
  - from:
    - podSelector:
        matchLabels:
          org: empire
    ports:
    - protocol: TCP
      port: 80
";

#[test]
fn the_networkpolicy_lesson_and_exercise_in_a_browser() {
    let lab = TestLab::up();
    let base = web_address(&lab);
    let outcome = session("failure-networkpolicy", async |c| {
        networkpolicy_lesson(c, &base).await
    });
    if let Err(e) = outcome {
        panic!(
            "{e:#}\n(see {}/failure-networkpolicy.png)",
            screenshot_dir().display()
        );
    }
}
