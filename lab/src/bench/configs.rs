//! The configurations a bench run compares, what each installs, and the probes that prove it is
//! in effect before anything is measured.
//!
//! The paper's five (no policy; one L3 rule; one L4 rule; one L7 rule; forty L7 rules) are
//! CiliumNetworkPolicies applied through the lab's API. The peers a user would pick instead run on
//! the same pods: iptables and nftables rules equivalent to the L3 and L4 policies, in the server
//! pod's own network namespace, and HAProxy in the server pod with 40 ACLs equivalent to the 40
//! L7 rules, as a reverse proxy in front of the echo server.

use std::net::Ipv4Addr;

/// The server pod's echo port, and HAProxy's.
pub const ECHO_PORT: u16 = 8080;
pub const HAPROXY_PORT: u16 = 8081;
/// A path no rule allows (the L7 probe expects 403 for it).
pub const DENIED_PATH: &str = "/bench-denied";
/// A path allowed by one of the 39 extra rules of the 40-rule configurations.
pub const OTHER_RULE_PATH: &str = "/api/v1/items/7";
/// The label of the load-generator pod.
pub const CLIENT_LABEL: &str = "bench-client";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Baseline,
    Cilium,
    Iptables,
    Nftables,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Cilium => "lab",
            Kind::Iptables => "iptables",
            Kind::Nftables => "nftables",
            Kind::Haproxy => "haproxy",
        }
    }
}

/// One configuration of the comparison.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub id: &'static str,
    pub title: &'static str,
    pub kind: Kind,
    /// "none", "L3", "L4" or "L7".
    pub layer: &'static str,
    pub rules: usize,
    /// Part of the paper's five.
    pub paper: bool,
}

pub fn all() -> Vec<BenchConfig> {
    let c = |id, title, kind, layer, rules, paper| BenchConfig {
        id,
        title,
        kind,
        layer,
        rules,
        paper,
    };
    vec![
        c("none", "No policy", Kind::Baseline, "none", 0, true),
        c("l3", "Lab: 1 L3 rule", Kind::Cilium, "L3", 1, true),
        c("l4", "Lab: 1 L4 rule", Kind::Cilium, "L4", 1, true),
        c("l7-1", "Lab: 1 L7 rule", Kind::Cilium, "L7", 1, true),
        c("l7-40", "Lab: 40 L7 rules", Kind::Cilium, "L7", 40, true),
        c(
            "iptables-l3",
            "iptables: L3",
            Kind::Iptables,
            "L3",
            1,
            false,
        ),
        c(
            "iptables-l4",
            "iptables: L4",
            Kind::Iptables,
            "L4",
            1,
            false,
        ),
        c(
            "nftables-l3",
            "nftables: L3",
            Kind::Nftables,
            "L3",
            1,
            false,
        ),
        c(
            "nftables-l4",
            "nftables: L4",
            Kind::Nftables,
            "L4",
            1,
            false,
        ),
        c(
            "haproxy-40",
            "HAProxy: 40 ACLs",
            Kind::Haproxy,
            "L7",
            40,
            false,
        ),
    ]
}

impl BenchConfig {
    /// The port the load generator talks to.
    pub fn port(&self) -> u16 {
        if self.kind == Kind::Haproxy {
            HAPROXY_PORT
        } else {
            ECHO_PORT
        }
    }

    /// The CiliumNetworkPolicy of a lab configuration.
    pub fn policy(&self) -> Option<String> {
        if self.kind != Kind::Cilium {
            return None;
        }
        Some(match self.layer {
            "L3" => l3_l4_policy(None),
            "L4" => l3_l4_policy(Some(&[ECHO_PORT])),
            _ => l7_policy(self.rules),
        })
    }

    /// The probes that show the configuration is what it claims to be.
    pub fn probes(&self) -> Vec<Probe> {
        let ok = |path: &'static str, port| Probe {
            from: "loadgen",
            port,
            path,
            expect: Expect::Status(200),
        };
        let port = self.port();
        let mut v = vec![ok("/", port)];
        let outsider = |expect| Probe {
            from: "outsider",
            port: ECHO_PORT,
            path: "/",
            expect,
        };
        let other_port = |expect| Probe {
            from: "loadgen",
            port: 9,
            path: "/",
            expect,
        };
        match (self.kind, self.layer) {
            (Kind::Baseline, _) => v.push(outsider(Expect::Status(200))),
            (Kind::Haproxy, _) => {
                v.push(ok(OTHER_RULE_PATH, port));
                v.push(Probe {
                    from: "loadgen",
                    port,
                    path: DENIED_PATH,
                    expect: Expect::Status(403),
                });
            }
            (_, "L3") => {
                v.push(outsider(Expect::Dropped));
                v.push(other_port(Expect::Refused));
            }
            (_, "L4") => {
                v.push(outsider(Expect::Dropped));
                v.push(other_port(Expect::Dropped));
            }
            (_, _) => {
                v.push(outsider(Expect::Dropped));
                v.push(Probe {
                    from: "loadgen",
                    port,
                    path: DENIED_PATH,
                    expect: Expect::Status(403),
                });
                if self.rules > 1 {
                    v.push(ok(OTHER_RULE_PATH, port));
                }
            }
        }
        v
    }

    /// An iptables-restore or nft script for the firewall peers, given the client's address.
    pub fn firewall(&self, client: Ipv4Addr) -> Option<String> {
        let l4 = self.layer == "L4";
        match self.kind {
            Kind::Iptables => Some(iptables_rules(client, l4, 0, true)),
            Kind::Nftables => Some(nft_rules(client, l4)),
            _ => None,
        }
    }
}

/// What a probe must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Status(u16),
    /// No answer at all (the SYN was dropped).
    Dropped,
    /// A reset (the port is reachable and closed).
    Refused,
}

impl Expect {
    pub fn describe(self) -> String {
        match self {
            Expect::Status(s) => s.to_string(),
            Expect::Dropped => "dropped".into(),
            Expect::Refused => "refused".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub from: &'static str,
    pub port: u16,
    pub path: &'static str,
    pub expect: Expect,
}

const SELECT_SERVER: &str = "  endpointSelector:\n    matchLabels:\n      app: bench-server\n";

/// One ingress rule from the client, on all ports (L3) or on `ports` (L4).
pub fn l3_l4_policy(ports: Option<&[u16]>) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bench\nspec:\n{SELECT_SERVER}  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: {CLIENT_LABEL}\n"
    );
    if let Some(ports) = ports {
        y.push_str("    toPorts:\n    - ports:\n");
        for p in ports {
            y.push_str(&format!("      - port: \"{p}\"\n        protocol: TCP\n"));
        }
    }
    y
}

/// The paths of the L7 rules: `rules - 1` that the bench never requests, then `/`, last, so that
/// a matcher that tries rules in order does all the work for every request.
pub fn l7_paths(rules: usize) -> Vec<String> {
    let mut v: Vec<String> = (1..rules).map(|i| format!("/api/v1/items/{i}")).collect();
    v.push("/".into());
    v
}

pub fn l7_policy(rules: usize) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bench\nspec:\n{SELECT_SERVER}  ingress:\n  - fromEndpoints:\n    - matchLabels:\n        app: {CLIENT_LABEL}\n    toPorts:\n    - ports:\n      - port: \"{ECHO_PORT}\"\n        protocol: TCP\n      rules:\n        http:\n"
    );
    for p in l7_paths(rules) {
        y.push_str(&format!("        - method: GET\n          path: \"{p}\"\n"));
    }
    y
}

/// `n` ingress rules from the client, each on its own port; only the last one (the echo port)
/// matches the bench's traffic. For the datapath scaling figures.
pub fn many_rules_policy(n: usize) -> String {
    let mut y = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: bench\nspec:\n{SELECT_SERVER}  ingress:\n"
    );
    for port in non_matching_ports(n.saturating_sub(1))
        .into_iter()
        .chain([ECHO_PORT])
    {
        y.push_str(&format!(
            "  - fromEndpoints:\n    - matchLabels:\n        app: {CLIENT_LABEL}\n    toPorts:\n    - ports:\n      - port: \"{port}\"\n        protocol: TCP\n"
        ));
    }
    y
}

/// `n` distinct TCP ports other than the bench's (from 20000 up, skipping nothing in use).
pub fn non_matching_ports(n: usize) -> Vec<u16> {
    (0..n).map(|i| 20000 + i as u16).collect()
}

/// iptables-restore input for the server pod's INPUT chain: loopback first, then (with
/// `conntrack`) replies of known connections, as any administrator writes it, then `extra` rules
/// that never match, then the allow rule, then drop. Without the conntrack shortcut every packet
/// walks every rule (the scaling figures measure the cost per rule).
pub fn iptables_rules(client: Ipv4Addr, l4: bool, extra: usize, conntrack: bool) -> String {
    let mut s = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n",
    );
    if conntrack {
        s.push_str("-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    }
    for port in non_matching_ports(extra) {
        s.push_str(&format!(
            "-A INPUT -s {client}/32 -p tcp -m tcp --dport {port} -j ACCEPT\n"
        ));
    }
    if l4 {
        s.push_str(&format!(
            "-A INPUT -s {client}/32 -p tcp -m tcp --dport {ECHO_PORT} -j ACCEPT\n"
        ));
    } else {
        s.push_str(&format!("-A INPUT -s {client}/32 -j ACCEPT\n"));
    }
    s.push_str("-A INPUT -j DROP\nCOMMIT\n");
    s
}

/// The nftables equivalent of [`iptables_rules`] (without extra rules).
pub fn nft_rules(client: Ipv4Addr, l4: bool) -> String {
    let allow = if l4 {
        format!("ip saddr {client} tcp dport {ECHO_PORT} accept")
    } else {
        format!("ip saddr {client} accept")
    };
    format!(
        "table inet bench {{\n  chain input {{\n    type filter hook input priority filter; policy drop;\n    iif \"lo\" accept\n    ct state established,related accept\n    {allow}\n  }}\n}}\n"
    )
}

/// HAProxy in front of the echo server with one `http-request allow` per L7 rule (method and
/// whole path-with-query as anchored regular expressions, as Cilium matches them), in the same
/// order, then 403 for everything else.
pub fn haproxy_config(rules: usize, connections: usize, threads: usize) -> String {
    let maxconn = (connections * 2).max(1000);
    let mut s = format!(
        "global\n  nbthread {threads}\n  maxconn {maxconn}\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 60s\n  option http-keep-alive\n  maxconn {maxconn}\n\nfrontend bench\n  bind *:{HAPROXY_PORT} backlog 4096\n"
    );
    for p in l7_paths(rules) {
        s.push_str(&format!(
            "  http-request allow if {{ method -m reg ^GET$ }} {{ pathq -m reg ^{}$ }}\n",
            p
        ));
    }
    s.push_str(&format!(
        "  http-request deny deny_status 403\n  default_backend echo\n\nbackend echo\n  http-reuse always\n  server echo 127.0.0.1:{ECHO_PORT} maxconn {maxconn}\n"
    ));
    s
}

/// The bench lab: the server (echo), the load generator, and an outsider that no rule allows.
pub const MANIFEST: &str = r#"# The bench lab of `lab bench`: a hello-world server, a load generator, and an outsider pod
# that no policy allows (the probes use it to show a policy is in force).
apiVersion: v1
kind: Pod
metadata:
  name: server
  labels:
    app: bench-server
spec:
  containers:
  - name: echo
    image: lab/echo
    env:
    - name: PORT
      value: "8080"
    - name: BODY
      value: "hello world\n"
---
apiVersion: v1
kind: Service
metadata:
  name: server
spec:
  selector:
    app: bench-server
  ports:
  - port: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: loadgen
  labels:
    app: bench-client
spec:
  containers:
  - name: wrk
    image: lab/ship
---
apiVersion: v1
kind: Pod
metadata:
  name: outsider
  labels:
    app: outsider
spec:
  containers:
  - name: c
    image: lab/ship
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_say_what_they_claim() {
        for c in all() {
            let Some(y) = c.policy() else { continue };
            let src = enforcer::yaml::Source::new("bench.yaml", y.clone());
            let docs = enforcer::policy::api::parse_policies(&src);
            assert!(docs.is_ok(), "{}: {y}: {:?}", c.id, docs.err());
        }
        let y = l7_policy(40);
        assert_eq!(y.matches("- method: GET").count(), 40);
        assert!(y.trim_end().ends_with("path: \"/\""));
        assert_eq!(
            many_rules_policy(1000).matches("fromEndpoints").count(),
            1000
        );
        let h = haproxy_config(40, 100, 2);
        assert_eq!(h.matches("http-request allow").count(), 40);
        let ip: Ipv4Addr = "10.244.0.3".parse().unwrap();
        assert!(iptables_rules(ip, true, 0, true).contains("--dport 8080"));
        assert_eq!(
            iptables_rules(ip, true, 10, false)
                .matches("-j ACCEPT")
                .count(),
            12
        );
        assert!(nft_rules(ip, false).contains("ip saddr 10.244.0.3 accept"));
    }
}
