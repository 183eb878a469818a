//! The connectivity matrix (`lab matrix`, `POST /api/matrix`): for every ordered pair of pods
//! and every port, whether a connection would pass, predicted from the policy state and,
//! when asked, measured with real traffic.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A column of the matrix: a protocol and a port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MatrixPort {
    /// `TCP` or `UDP`.
    pub protocol: String,
    pub port: u16,
}

impl fmt::Display for MatrixPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

impl MatrixPort {
    /// `TCP/80`, `udp/81` → a port.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (proto, port) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}`: write PROTOCOL/PORT, for example TCP/80"))?;
        let protocol = proto.to_ascii_uppercase();
        if protocol != "TCP" && protocol != "UDP" {
            return Err(format!("`{s}`: the protocol is TCP or UDP"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{s}`: the port is 1 to 65535"))?;
        Ok(MatrixPort { protocol, port })
    }
}

/// What to put in the matrix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixRequest {
    /// Send real traffic for every cell, besides predicting it.
    #[serde(default)]
    pub probe: bool,
    /// Only pods of these namespaces (all when empty).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The columns; when empty, every port a pod declares (`containerPorts`).
    #[serde(default)]
    pub ports: Vec<MatrixPort>,
}

/// One cell: from `pods[from]` to `pods[to]` on `ports[port]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    pub from: usize,
    pub to: usize,
    pub port: usize,
    /// What the policy state says: both the sender's egress and the receiver's ingress allow
    /// it (an L7 redirect counts as allowed: the connection is made, requests are judged).
    pub predicted: bool,
    /// What real traffic did (`None` when not probed).
    pub probed: Option<bool>,
    /// The deciding rule at the sender's egress, in the words flows use (`None`: no policy
    /// selects the sender for egress).
    pub egress: Option<String>,
    /// The same at the receiver's ingress.
    pub ingress: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matrix {
    /// `namespace/name`, sorted.
    pub pods: Vec<String>,
    pub ports: Vec<MatrixPort>,
    pub cells: Vec<MatrixCell>,
    /// Cells where prediction and probe disagree (a bug of the lab when not zero).
    pub disagreements: usize,
}

impl Matrix {
    /// The cell for (from, to, port), by index.
    pub fn cell(&self, from: usize, to: usize, port: usize) -> Option<&MatrixCell> {
        self.cells
            .iter()
            .find(|c| c.from == from && c.to == to && c.port == port)
    }

    /// One table per port, rows = from, columns = to: `.` passes, `X` is dropped; with probes,
    /// a cell where prediction and probe disagree shows `!` (and the legend says which is
    /// which). `show` picks the value shown.
    pub fn render(&self, show: impl Fn(&MatrixCell) -> Option<bool>) -> String {
        let mut out = String::new();
        let width = self.pods.iter().map(String::len).max().unwrap_or(1).max(3);
        for (pi, port) in self.ports.iter().enumerate() {
            out.push_str(&format!("{port:<width$}"));
            for p in &self.pods {
                out.push_str(&format!(" {p:>width$}"));
            }
            out.push('\n');
            for (fi, from) in self.pods.iter().enumerate() {
                out.push_str(&format!("{from:<width$}"));
                for ti in 0..self.pods.len() {
                    let mark = match self.cell(fi, ti, pi) {
                        None => "-",
                        Some(c) if c.probed.is_some_and(|p| p != c.predicted) => "!",
                        Some(c) => match show(c) {
                            Some(true) => ".",
                            Some(false) => "X",
                            None => "?",
                        },
                    };
                    out.push_str(&format!(" {mark:>width$}"));
                }
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }
}
