//! Prometheus text exposition with Cilium's metric names, from the datapath's per-CPU
//! counters, the flow log and the proxy.

use std::fmt::Write;

use enforcer_common::*;

use crate::control::Lab;

/// Cilium's human-readable drop reasons (the `reason` label of `cilium_drop_count_total`).
fn reason_label(code: u8) -> String {
    match code {
        DROP_POLICY_DENIED => "Policy denied".into(),
        DROP_POLICY_DENY => "Policy denied by denylist".into(),
        DROP_INVALID_SOURCE_IP => "Invalid source ip".into(),
        DROP_INVALID_PACKET => "Invalid packet".into(),
        DROP_CT_INVALID_HEADER => "CT: Truncated or invalid header".into(),
        DROP_UNSUPPORTED_L3 => "Unsupported L3 protocol".into(),
        DROP_CT_MAP_INSERTION_FAILED => "CT: Map insertion failed".into(),
        DROP_FRAG_NOT_FOUND => "Fragmentation needed".into(),
        DROP_PROXY_UNAVAILABLE => "Proxy redirection unavailable".into(),
        DROP_CONN_LIMIT => "Connection limit exceeded".into(),
        DROP_PREFILTER => "Denied by prefilter".into(),
        other => enforcer::flow::drop_reason_name(other).into(),
    }
}

fn dir_label(d: u8) -> &'static str {
    if d == DIR_INGRESS {
        "INGRESS"
    } else {
        "EGRESS"
    }
}

pub fn render(lab: &Lab) -> String {
    let counters = lab.engine.lock().expect("engine").datapath_ref().metrics();
    let mut out = String::new();
    let mut forward = std::collections::BTreeMap::<&str, u64>::new();
    let mut drops = std::collections::BTreeMap::<(String, &str), u64>::new();
    let mut lost = 0;
    for (index, value) in counters {
        if index == METRIC_EVENTS_LOST {
            lost = value;
            continue;
        }
        let kind = (index >> 10) as u8;
        let reason = ((index >> 2) & 0xff) as u8;
        let dir = dir_label((index & 3) as u8);
        match kind {
            METRIC_DROPPED => *drops.entry((reason_label(reason), dir)).or_default() += value,
            _ => *forward.entry(dir).or_default() += value,
        }
    }
    let _ = writeln!(
        out,
        "# HELP cilium_forward_count_total Total forwarded packets, tagged by ingress/egress direction"
    );
    let _ = writeln!(out, "# TYPE cilium_forward_count_total counter");
    for dir in ["EGRESS", "INGRESS"] {
        let _ = writeln!(
            out,
            "cilium_forward_count_total{{direction=\"{dir}\"}} {}",
            forward.get(dir).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP cilium_drop_count_total Total dropped packets, tagged by drop reason and ingress/egress direction"
    );
    let _ = writeln!(out, "# TYPE cilium_drop_count_total counter");
    for ((reason, dir), v) in &drops {
        let _ = writeln!(
            out,
            "cilium_drop_count_total{{direction=\"{dir}\",reason=\"{reason}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP lab_flow_events_lost_total Flow events lost because the ring buffer was full"
    );
    let _ = writeln!(out, "# TYPE lab_flow_events_lost_total counter");
    let _ = writeln!(out, "lab_flow_events_lost_total {lost}");
    let _ = writeln!(
        out,
        "# HELP hubble_policy_verdicts_total Number of policy verdicts, by direction, match type and action"
    );
    let _ = writeln!(out, "# TYPE hubble_policy_verdicts_total counter");
    for ((dir, matched, action), v) in lab.verdicts.lock().expect("verdicts").iter() {
        let _ = writeln!(
            out,
            "hubble_policy_verdicts_total{{direction=\"{dir}\",match=\"{matched}\",action=\"{action}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP lab_policy_dry_run_total Flows a policy in audit mode would allow or drop if it were enforced"
    );
    let _ = writeln!(out, "# TYPE lab_policy_dry_run_total counter");
    for ((policy, would), v) in lab.dry_runs.lock().expect("dry runs").iter() {
        let _ = writeln!(
            out,
            "lab_policy_dry_run_total{{policy=\"{policy}\",verdict=\"would_{would}\"}} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP lab_nodeport_connections_total Connections from outside the cluster to NodePorts, by source (internet = outside 10/8, 172.16/12, 192.168/16)"
    );
    let _ = writeln!(out, "# TYPE lab_nodeport_connections_total counter");
    for ((service, port, class), v) in lab.nodeport_conns.lock().expect("nodeport").iter() {
        let _ = writeln!(
            out,
            "lab_nodeport_connections_total{{service=\"{service}\",node_port=\"{port}\",source=\"{class}\"}} {v}"
        );
    }
    lab.proxy_stats.write_prometheus(&mut out);
    let _ = writeln!(
        out,
        "# HELP lab_l7_flow_records_dropped_total L7 flow records not kept because flow processing could not keep up"
    );
    let _ = writeln!(out, "# TYPE lab_l7_flow_records_dropped_total counter");
    let _ = writeln!(
        out,
        "lab_l7_flow_records_dropped_total {}",
        lab.l7_dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP lab_l7_flow_records_sampled_total Forwarded HTTP requests not kept as flows (over {} per second)",
        crate::control::L7_FORWARDED_FLOWS_PER_SECOND
    );
    let _ = writeln!(out, "# TYPE lab_l7_flow_records_sampled_total counter");
    let _ = writeln!(
        out,
        "lab_l7_flow_records_sampled_total {}",
        lab.l7_sampled_out
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    crate::policies::render_metrics(lab, &mut out);
    out
}
