//! The flow recorder: takes the datapath's events and the L7 proxy's records, has the
//! enforcer name them as Hubble-shaped flows, keeps the recent ones (for `lab observe` and the
//! page), feeds live subscribers, and counts them for the metrics: Hubble's policy verdicts,
//! what policies in audit mode would have done, and connections to NodePorts by where they
//! come from.

use std::{
    collections::{BTreeMap, VecDeque},
    net::Ipv4Addr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use enforcer::{
    datapath::AsyncEventReader,
    engine::SharedNames,
    flow::{Flow, FlowType, ObservationPoint, Verdict},
    proxy::{L7Record, L7Verdict, Observer},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};
use tokio::sync::{broadcast, mpsc, watch};

use crate::cluster;

/// Flows kept for listings.
const RECENT_FLOWS: usize = 20_000;
/// Forwarded HTTP requests and responses kept as flows per second; beyond that they are
/// sampled out (counted), so flow records never eat the CPU the proxy needs under load.
/// Denials, parse errors and upstream errors are always kept.
pub const L7_FORWARDED_FLOWS_PER_SECOND: u64 = 500;
/// L7 records waiting to be named.
const L7_QUEUE: usize = 8192;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub direction: &'static str,
    /// `l3-l4`, `l7/http` or `none` (the label is `match`).
    pub r#match: &'static str,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DryRunLabels {
    pub policy: String,
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodePortLabels {
    pub service: String,
    pub node_port: u16,
    pub source: &'static str,
}

/// The recorder's counters (shared with the metrics registry at each scrape).
#[derive(Default)]
pub struct FlowMetrics {
    /// `hubble_policy_verdicts_total{direction, match, action}`.
    pub verdicts: Family<VerdictLabels, Counter>,
    /// `lab_policy_dry_run_total{policy, verdict}`.
    pub dry_runs: Family<DryRunLabels, Counter>,
    /// `lab_nodeport_connections_total{service, node_port, source}`.
    pub nodeport_connections: Family<NodePortLabels, Counter>,
    /// L7 records dropped because flow processing could not keep up.
    pub l7_dropped: Counter,
    /// Forwarded L7 records not kept (over the per-second budget).
    pub l7_sampled_out: Counter,
}

pub struct FlowRecorder {
    recent: Mutex<VecDeque<Arc<Flow>>>,
    live: broadcast::Sender<Arc<Flow>>,
    names: SharedNames,
    node_name: String,
    /// NodePort → `namespace/service`, for the NodePort counter.
    node_ports: RwLock<BTreeMap<u16, String>>,
    pub metrics: FlowMetrics,
    l7_queue: mpsc::Sender<L7Record>,
}

impl FlowRecorder {
    /// A recorder naming flows with `names`; the receiver is for [`Self::spawn_l7_reader`].
    pub fn new(names: SharedNames, node_name: &str) -> (Arc<Self>, mpsc::Receiver<L7Record>) {
        let (live, _) = broadcast::channel(4096);
        let (l7_queue, rx) = mpsc::channel(L7_QUEUE);
        let recorder = Arc::new(Self {
            recent: Mutex::new(VecDeque::with_capacity(RECENT_FLOWS)),
            live,
            names,
            node_name: node_name.to_owned(),
            node_ports: RwLock::new(BTreeMap::new()),
            metrics: FlowMetrics::default(),
            l7_queue,
        });
        (recorder, rx)
    }

    /// The services behind NodePorts (`node port → namespace/name`).
    pub fn set_node_ports(&self, node_ports: BTreeMap<u16, String>) {
        *self.node_ports.write().expect("node ports") = node_ports;
    }

    /// Reads the datapath's events until `stop` changes.
    pub fn spawn_event_reader(
        self: Arc<Self>,
        mut reader: AsyncEventReader,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                tokio::select! {
                    r = reader.next_batch(&mut batch) => if r.is_err() { break },
                    _ = stop.changed() => break,
                }
                let names = self.names.read().expect("names").clone();
                for ev in batch.drain(..) {
                    self.record(enforcer::flow::from_event(&ev, &names, &self.node_name));
                }
            }
        });
    }

    /// Names the proxy's records as flows, off the proxy's hot path.
    pub fn spawn_l7_reader(self: &Arc<Self>, mut rx: mpsc::Receiver<L7Record>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(rec) = rx.recv().await {
                let Some(recorder) = weak.upgrade() else {
                    break;
                };
                let names = recorder.names.read().expect("names").clone();
                let flow = enforcer::flow::from_l7(&rec, &names, &recorder.node_name);
                recorder.record(flow);
            }
        });
    }

    /// What the proxy reports to: a bounded queue, and a count of what did not fit.
    pub fn observer(self: &Arc<Self>) -> Arc<dyn Observer> {
        Arc::new(L7Intake {
            recorder: self.clone(),
            started: Instant::now(),
            window: AtomicU64::new(0),
            used: AtomicU64::new(0),
        })
    }

    /// The recent flows (oldest first).
    pub fn recent(&self) -> Vec<Arc<Flow>> {
        self.recent
            .lock()
            .expect("flow log")
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Flow>> {
        self.live.subscribe()
    }

    /// Keeps a flow and counts it.
    fn record(&self, flow: Flow) {
        self.count(&flow);
        let flow = Arc::new(flow);
        {
            let mut recent = self.recent.lock().expect("flow log");
            if recent.len() == RECENT_FLOWS {
                recent.pop_front();
            }
            recent.push_back(flow.clone());
        }
        let _ = self.live.send(flow);
    }

    fn count(&self, flow: &Flow) {
        let matched = match (flow.flow_type, flow.decided_by_rule()) {
            (FlowType::L7, _) => "l7/http",
            (_, true) => "l3-l4",
            (_, false) => "none",
        };
        self.metrics
            .verdicts
            .get_or_create(&VerdictLabels {
                direction: flow.traffic_direction.lower(),
                r#match: matched,
                action: flow.verdict.name().to_lowercase(),
            })
            .inc();
        for d in &flow.dry_run {
            let verdict = match d.would {
                enforcer::flow::Would::Allow => "would_allow",
                enforcer::flow::Would::Drop => "would_drop",
            };
            self.metrics
                .dry_runs
                .get_or_create(&DryRunLabels {
                    policy: d.policy_key(),
                    verdict,
                })
                .inc();
        }
        if flow.trace_observation_point == ObservationPoint::FromNetwork
            && flow.verdict == Verdict::Forwarded
        {
            // A connection from outside to a NodePort: the alert that would have caught the
            // 72-hour exposure counts those from outside the internal ranges.
            let port = flow.destination_port().unwrap_or(0);
            let source = if is_internal(flow.ip.source) {
                "internal"
            } else {
                "internet"
            };
            let service = self
                .node_ports
                .read()
                .expect("node ports")
                .get(&port)
                .cloned()
                .unwrap_or_default();
            self.metrics
                .nodeport_connections
                .get_or_create(&NodePortLabels {
                    service,
                    node_port: port,
                    source,
                })
                .inc();
        }
    }
}

fn is_internal(ip: Ipv4Addr) -> bool {
    cluster::INTERNAL_RANGES
        .iter()
        .any(|range| cluster::net(*range).contains(&ip))
}

/// Hands the proxy's records to the recorder: a bounded queue, with a per-second budget for
/// forwarded requests and responses.
struct L7Intake {
    recorder: Arc<FlowRecorder>,
    started: Instant,
    /// The second the budget below counts for, and how much of it is used.
    window: AtomicU64,
    used: AtomicU64,
}

impl Observer for L7Intake {
    fn record(&self, rec: L7Record) {
        let metrics = &self.recorder.metrics;
        if rec.verdict == L7Verdict::Forwarded {
            let now = self.started.elapsed().as_secs();
            if self.window.swap(now, Ordering::Relaxed) != now {
                self.used.store(0, Ordering::Relaxed);
            }
            if self.used.fetch_add(1, Ordering::Relaxed) >= L7_FORWARDED_FLOWS_PER_SECOND {
                metrics.l7_sampled_out.inc();
                return;
            }
        }
        if self.recorder.l7_queue.try_send(rec).is_err() {
            metrics.l7_dropped.inc();
        }
    }
}
