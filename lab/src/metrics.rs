//! The lab's metrics with Cilium's names, in the OpenMetrics text format (prometheus-client):
//! the datapath's per-CPU packet counters, the flow recorder's counts, the L7 proxy's counters
//! and latency histogram, and the policy set's gauges. A registry is assembled at each scrape:
//! the recorder's counters are shared with it, the rest are read at that moment.

use enforcer_common::{DIR_INGRESS, METRIC_DROPPED, METRIC_EVENTS_LOST};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
    },
    registry::Registry,
};

use crate::{control::Lab, flows::L7_FORWARDED_FLOWS_PER_SECOND};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
    pod: String,
    port: u16,
}

pub fn render(lab: &Lab) -> String {
    let mut registry = Registry::default();
    datapath_counters(lab, &mut registry);
    let m = &lab.recorder.metrics;
    registry.register(
        "hubble_policy_verdicts",
        "Number of policy verdicts, by direction, match type and action",
        m.verdicts.clone(),
    );
    registry.register(
        "lab_policy_dry_run",
        "Flows a policy in audit mode would allow or drop if it were enforced",
        m.dry_runs.clone(),
    );
    registry.register(
        "lab_nodeport_connections",
        "Connections from outside the cluster to NodePorts, by source (internet = outside 10/8, 172.16/12, 192.168/16)",
        m.nodeport_connections.clone(),
    );
    proxy_metrics(lab, &mut registry);
    registry.register(
        "lab_l7_flow_records_dropped",
        "L7 flow records not kept because flow processing could not keep up",
        m.l7_dropped.clone(),
    );
    registry.register(
        "lab_l7_flow_records_sampled",
        format!("Forwarded HTTP requests not kept as flows (over {L7_FORWARDED_FLOWS_PER_SECOND} per second)"),
        m.l7_sampled_out.clone(),
    );
    policy_gauges(lab, &mut registry);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// `cilium_forward_count_total`, `cilium_drop_count_total` and lost events, from the
/// datapath's per-CPU counters.
fn datapath_counters(lab: &Lab, registry: &mut Registry) {
    let counters = lab.engine.lock().expect("engine").datapath_ref().metrics();
    let forward = Family::<DirectionLabels, Counter>::default();
    let drops = Family::<DropLabels, Counter>::default();
    let lost = Counter::<u64>::default();
    for direction in ["EGRESS", "INGRESS"] {
        forward
            .get_or_create(&DirectionLabels { direction })
            .inc_by(0);
    }
    for (index, value) in counters {
        if index == METRIC_EVENTS_LOST {
            lost.inc_by(value);
            continue;
        }
        let kind = (index >> 10) as u8;
        let reason = ((index >> 2) & 0xff) as u8;
        let direction = if (index & 3) as u8 == DIR_INGRESS {
            "INGRESS"
        } else {
            "EGRESS"
        };
        if kind == METRIC_DROPPED {
            let reason = enforcer::flow::drop_reason(reason).metric_label();
            drops
                .get_or_create(&DropLabels { direction, reason })
                .inc_by(value);
        } else {
            forward
                .get_or_create(&DirectionLabels { direction })
                .inc_by(value);
        }
    }
    registry.register(
        "cilium_forward_count",
        "Total forwarded packets, tagged by ingress/egress direction",
        forward,
    );
    registry.register(
        "cilium_drop_count",
        "Total dropped packets, tagged by drop reason and ingress/egress direction",
        drops,
    );
    registry.register(
        "lab_flow_events_lost",
        "Flow events lost because the ring buffer was full",
        lost,
    );
}

/// `cilium_policy_l7_total`, upstream errors and the upstream reply-time histogram.
fn proxy_metrics(lab: &Lab, registry: &mut Registry) {
    let s = lab.proxy_stats.snapshot();
    let l7 = Family::<RuleLabels, Counter>::default();
    for (rule, v) in [
        ("received", s.received),
        ("forwarded", s.forwarded),
        ("denied", s.denied),
        ("parse_errors", s.parse_errors),
    ] {
        l7.get_or_create(&RuleLabels { rule }).inc_by(v);
    }
    registry.register(
        "cilium_policy_l7",
        "Number of total proxy requests handled",
        l7,
    );
    registry.register(
        "cilium_proxy_upstream_errors",
        "Upstream failures seen by the L7 proxy",
        ConstCounter::new(s.upstream_errors),
    );
    // The proxy's buckets are cumulative with an infinite last bound; the encoder wants each
    // bucket's own count and `f64::MAX` for +Inf.
    let mut previous = 0;
    let buckets = s
        .latency_buckets
        .iter()
        .map(|(le, cumulative)| {
            let own = cumulative - previous;
            previous = *cumulative;
            (if le.is_infinite() { f64::MAX } else { *le }, own)
        })
        .collect();
    registry.register_collector(Box::new(ConstHistogram {
        name: "cilium_proxy_upstream_reply_seconds",
        help: "Seconds waited to get a reply from an upstream server.",
        sum: s.latency_sum_seconds,
        count: s.latency_count,
        buckets,
    }));
}

/// A histogram read from counters kept elsewhere (the proxy's lock-free ones).
#[derive(Debug)]
struct ConstHistogram {
    name: &'static str,
    help: &'static str,
    sum: f64,
    count: u64,
    /// (upper bound, count in this bucket alone).
    buckets: Vec<(f64, u64)>,
}

impl Collector for ConstHistogram {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        metric.encode_histogram::<Vec<(String, String)>>(self.sum, self.count, &self.buckets, None)
    }
}

/// The number of policies and their revision, lab-wide audit mode, and the connection limits
/// with their counts.
fn policy_gauges(lab: &Lab, registry: &mut Registry) {
    {
        let store = lab.policies.lock().expect("policies");
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        registry.register(
            "cilium_policy",
            "Number of policies currently loaded",
            gauge(store.docs.len() as i64),
        );
        registry.register(
            "cilium_policy_max_revision",
            "Highest policy revision number in the agent",
            gauge(store.revision as i64),
        );
        registry.register(
            "lab_policy_audit_mode",
            "Whether lab-wide audit mode is on (would-be drops are forwarded)",
            gauge(i64::from(store.audit_all)),
        );
    }
    {
        let engine = lab.engine.lock().expect("engine");
        let gauge = |v: usize| {
            let g = Gauge::<i64>::default();
            g.set(v as i64);
            g
        };
        registry.register(
            "cilium_endpoint",
            "Number of endpoints managed by this agent",
            gauge(engine.endpoints().count()),
        );
        registry.register(
            "cilium_identity",
            "Number of identities currently allocated",
            gauge(engine.identities().all().count()),
        );
        registry.register(
            "lab_policy_map_entries",
            "Entries in the datapath's policy map, over all endpoints",
            gauge(engine.policy_entries()),
        );
    }
    let connections = Family::<LimitLabels, Gauge>::default();
    let max = Family::<LimitLabels, Gauge>::default();
    for l in crate::policies::limit_status(lab) {
        let labels = LimitLabels {
            limit: l.limit,
            pod: l.pod,
            port: l.port,
        };
        connections.get_or_create(&labels).set(l.connections as i64);
        max.get_or_create(&labels).set(i64::from(l.max));
    }
    registry.register(
        "lab_connection_limit_connections",
        "Established connections counted against a connection limit",
        connections,
    );
    registry.register("lab_connection_limit_max", "The connection limit", max);
}
