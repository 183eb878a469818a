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
        let first = self
            .ports
            .iter()
            .map(|p| p.to_string().len())
            .max()
            .unwrap_or(0)
            .max(width);
        for (pi, port) in self.ports.iter().enumerate() {
            out.push_str(&format!("{:<first$}", port.to_string()));
            for p in &self.pods {
                out.push_str(&format!(" {p:>width$}"));
            }
            out.push('\n');
            for (fi, from) in self.pods.iter().enumerate() {
                out.push_str(&format!("{from:<first$}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_tables_render() {
        assert_eq!(
            MatrixPort::parse("udp/81").unwrap(),
            MatrixPort {
                protocol: "UDP".into(),
                port: 81
            }
        );
        assert!(MatrixPort::parse("ICMP/8").is_err());
        assert!(MatrixPort::parse("TCP/0").is_err());
        assert!(MatrixPort::parse("80").is_err());
        let cell = |from, to, predicted, probed| MatrixCell {
            from,
            to,
            port: 0,
            predicted,
            probed,
            egress: None,
            ingress: None,
        };
        let m = Matrix {
            pods: vec!["x/a".into(), "x/b".into()],
            ports: vec![MatrixPort::parse("TCP/80").unwrap()],
            cells: vec![
                cell(0, 0, true, Some(true)),
                cell(0, 1, false, Some(false)),
                cell(1, 0, true, Some(false)),
                cell(1, 1, true, None),
            ],
            disagreements: 1,
        };
        let text = m.render(|c| c.probed.or(Some(c.predicted)));
        assert_eq!(text, "TCP/80 x/a x/b\nx/a      .   X\nx/b      !   .\n\n");
    }
}
