//! A program run inside a pod with its output captured (`POST /api/pods/{ns}/{name}/exec`):
//! what lesson steps and exercise probes do with `xwing -- curl ...`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// `None` when a signal ended it (or it was killed at the time limit).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed_ms: u64,
    pub timed_out: bool,
}
