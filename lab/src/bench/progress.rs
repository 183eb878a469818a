//! Progress of a bench run as JSON lines (`lab bench --progress-json FILE`), for the web lab's
//! progress bar, and cancellation: the first SIGTERM or SIGINT asks the run to stop after the
//! current step (a running load generator is stopped at once) and still take its bench lab down;
//! a second one exits at once.
//!
//! Each line is one object, written with a single `write` to a file opened for appending, so a
//! reader never sees a torn line except possibly the last one being written:
//!
//! ```text
//! {"phase": "lab" | "http" | "datapath" | "cleanup" | "done" | "failed" | "cancelled",
//!  "step": steps completed before this one, "steps": all steps of the run,
//!  "elapsed_s": seconds since the run started, "message": what happens now, for people,
//!  "round", "rounds", "config", "configs", "id", "title"     (phase http; 1-based)
//!  "point", "points", "filter", "rules"                      (phase datapath; 1-based)
//!  "out" (done), "error" (failed, cancelled)}
//! ```
//!
//! A step is one configuration in one round, or one datapath measurement.

use std::{
    fs::File,
    io::Write,
    path::Path,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, Result};
use serde_json::{Value, json};

static SINK: OnceLock<Mutex<File>> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();
static STEP: AtomicUsize = AtomicUsize::new(0);
static STEPS: AtomicUsize = AtomicUsize::new(0);
static CANCEL: AtomicBool = AtomicBool::new(false);

/// Starts the clock, opens the progress file (if any) and installs the signal handlers.
pub fn init(file: Option<&Path>, steps: usize) -> Result<()> {
    START.get_or_init(Instant::now);
    STEPS.store(steps, Ordering::Relaxed);
    if let Some(path) = file {
        let f = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the progress file {}", path.display()))?;
        let _ = SINK.set(Mutex::new(f));
    }
    install_signal_handlers();
    Ok(())
}

fn elapsed() -> f64 {
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Writes one event (`phase` plus `fields`), with the step counts and the elapsed time.
pub fn emit(phase: &str, fields: Value) {
    let Some(sink) = SINK.get() else { return };
    let mut ev = json!({
        "phase": phase,
        "step": STEP.load(Ordering::Relaxed),
        "steps": STEPS.load(Ordering::Relaxed),
        "elapsed_s": (elapsed() * 10.0).round() / 10.0,
    });
    if let (Some(ev), Value::Object(more)) = (ev.as_object_mut(), fields) {
        ev.extend(more);
    }
    let mut line = ev.to_string();
    line.push('\n');
    if let Ok(mut f) = sink.lock() {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Announces the next step (counting the ones before it as done).
pub fn step(phase: &str, fields: Value) {
    emit(phase, fields);
    STEP.fetch_add(1, Ordering::Relaxed);
}

/// Whether the run was asked to stop.
pub fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

extern "C" fn on_signal(_: libc::c_int) {
    if CANCEL.swap(true, Ordering::Relaxed) {
        // A second signal: the user insists. `_exit` is async-signal-safe.
        // SAFETY: ends the process without running anything else.
        unsafe { libc::_exit(130) };
    }
}

fn install_signal_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only touches an atomic and may call `_exit`, both
        // async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_lines_with_counts() {
        let dir = std::env::temp_dir().join(format!("lab-progress-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.jsonl");
        // Only the file sink, not the signal handlers: the test runner keeps its own.
        START.get_or_init(Instant::now);
        STEPS.store(3, Ordering::Relaxed);
        let _ = SINK.set(Mutex::new(
            File::options()
                .create(true)
                .append(true)
                .open(&file)
                .unwrap(),
        ));
        step("http", json!({"config": 1, "configs": 3}));
        step("http", json!({"config": 2, "configs": 3}));
        emit("done", json!({"out": "x"}));
        let text = std::fs::read_to_string(&file).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0]["step"], 0);
        assert_eq!(events[1]["step"], 1);
        assert_eq!(events[1]["config"], 2);
        assert_eq!(events[2]["phase"], "done");
        assert_eq!(events[2]["step"], 2);
        assert_eq!(events[2]["steps"], 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
