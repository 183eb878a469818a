//! Plain serde types for what crosses the lab's boundaries: between crates (the enforcer makes
//! flows, the lab serves them, the web page and the CLI read them) and over the control API.
//! No behaviour beyond describing and parsing these values; JSON is written only at the edges
//! (the HTTP API, the SSE flow stream, `-o json`).
//!
//! - [`flow`]: Hubble-shaped flows with their verdicts, directions, types and drop reasons, and
//!   the filter of a flow listing.
//! - [`cluster`]: the lab's status, pods, outside hosts, services, endpoints, identities.
//! - [`policy`]: applying, deleting and listing policies, audit mode, connection limits, the
//!   XDP prefilter, `lab audit`'s findings.
//! - [`matrix`]: the connectivity matrix, predicted and probed.
//! - [`moves`]: the ships' moves, their one parser from words, and their outcomes.
//! - [`exec`]: a program run in a pod.
//! - [`time`]: RFC 3339 times.

pub mod cluster;
pub mod exec;
pub mod flow;
pub mod matrix;
pub mod moves;
pub mod policy;
pub mod time;

pub use cluster::{
    ConntrackEntry, Endpoint, Host, Identity, IdentityKind, Pod, PodContext, PodPhase, PortRef,
    Service, ServicePort, ServiceType, Status,
};
pub use exec::{ExecRequest, ExecResult};
pub use flow::{
    Drop, DropReason, DryRun, EndpointRef, Flow, FlowFilter, FlowType, Http, Icmp, IpInfo,
    IpVersion, L4, L7, L7Type, ObservationPoint, PolicyRef, Ports, TcpFlags, TrafficDirection,
    Verdict, Would,
};
pub use matrix::{Matrix, MatrixCell, MatrixPort, MatrixRequest};
pub use moves::{Move, Options, Outcome, ShipCommand, ShipOptions, ShipRequest, ShipResult};
pub use policy::{
    Applied, ApplyAction, ApplyRequest, ApplyResult, AuditFile, AuditMode, AuditRequest,
    AuditSwitch, DeleteRequest, DeleteResult, ErrorKind, Finding, LimitStatus, Located,
    MAX_SOURCE_BYTES, PolicyAudit, PolicyEntry, PrefilterChange, PrefilterState, Severity,
};
