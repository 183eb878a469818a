//! `lab bench --quick`: the whole benchmark in its CI-sized preset, with its own lab instance
//! and output directory, checked for structure and sanity (never for timings).

use std::process::Command;

use serde_json::Value;

use crate::harness::{LAB, leftovers};

const CONFIGS: &[&str] = &[
    "none",
    "l3",
    "l4",
    "l7-1",
    "l7-40",
    "iptables-l3",
    "iptables-l4",
    "nftables-l3",
    "nftables-l4",
    "haproxy-40",
];

fn monotonic(pairs: &Value) -> bool {
    let v: Vec<(f64, u64)> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_u64().unwrap()))
        .collect();
    !v.is_empty() && v.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
}

fn check_latency(id: &str, l: &Value) {
    let count = l["count"].as_u64().unwrap();
    assert!(count > 0, "{id}: no latency recorded: {l}");
    assert!(monotonic(&l["percentiles"]), "{id}: percentiles: {l}");
    let p = l["percentiles"].as_array().unwrap();
    assert_eq!(p.len(), 8, "{id}: {l}");
    assert_eq!(p.last().unwrap()[0], 100.0);
    let (min, max) = (l["min_us"].as_u64().unwrap(), l["max_us"].as_u64().unwrap());
    assert!(min <= p[0][1].as_u64().unwrap(), "{id}: min above p50: {l}");
    assert!(
        p.last().unwrap()[1].as_u64().unwrap() <= max,
        "{id}: p100 above max: {l}"
    );
}

#[test]
fn bench_quick_runs_every_configuration_and_writes_sane_results() {
    testkit::require_root();
    let instance = testkit::unique_name("bq");
    let out = std::env::temp_dir().join(format!("{instance}-results"));
    let run = Command::new(LAB)
        .args(["bench", "--quick", "--bench-instance", &instance, "--out"])
        .arg(&out)
        .output()
        .expect("running lab bench");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    // The bench brought up its own lab and took it down again.
    let left = leftovers(&instance);
    if !left.is_empty() {
        let _ = Command::new(LAB)
            .args(["--instance", &instance, "down"])
            .output();
    }
    assert!(
        run.status.success(),
        "lab bench --quick failed:\n{}{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
    assert!(left.is_empty(), "the bench left behind: {left:?}");

    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let r: Value = serde_json::from_str(&text).expect("results.json is JSON");
    assert_eq!(r["schema"], "lab-bench/1");
    assert_eq!(r["preset"], "quick");
    assert!(r["host"]["cpus"].as_u64().unwrap() >= 1);
    let requested = r["settings"]["rate"].as_f64().unwrap();
    assert!(requested > 0.0);

    let configs = r["configs"].as_array().unwrap();
    let ids: Vec<&str> = configs.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, CONFIGS, "every configuration, in order");
    for c in configs {
        let id = c["id"].as_str().unwrap();
        let status = c["status"].as_str().unwrap();
        assert!(!c["probes"].as_array().unwrap().is_empty(), "{id}: probed");
        match status {
            "measured" => {
                assert!(
                    c["probes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|p| p["ok"] == true),
                    "{id}: measured although a probe failed: {c}"
                );
                let o = &c["open_loop"];
                assert_eq!(o["requested_rps"].as_f64().unwrap(), requested, "{id}");
                let achieved = o["achieved_rps"].as_f64().unwrap();
                assert!(achieved > 0.0, "{id}: achieved rate recorded: {o}");
                assert_eq!(o["achieved_rps_rounds"].as_array().unwrap().len(), 1);
                // Flagged exactly when the server fell behind the requested rate.
                let behind = o["achieved_rps_rounds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a.as_f64().unwrap() < 0.95 * requested);
                assert_eq!(o["saturated"].as_bool().unwrap(), behind, "{id}: {o}");
                check_latency(id, &o["latency_us"]);
                check_latency(id, &o["service_time_us"]);
                assert!(monotonic(&o["spectrum"]), "{id}: spectrum");
                // Every request answered 2xx: the bench's path is allowed everywhere.
                let status = o["status"].as_object().unwrap();
                assert!(status.keys().all(|k| k == "2xx"), "{id}: {status:?}");
                let m = &c["max_throughput"];
                assert!(m["rps"].as_f64().unwrap() > 0.0, "{id}: {m}");
                check_latency(id, &m["latency_us"]);
            }
            // A configuration that is not what it claims is reported, never measured.
            "not_in_effect" => {
                assert!(c["reason"].is_string(), "{id}: {c}");
                assert!(c["open_loop"].is_null() && c["max_throughput"].is_null());
                assert!(
                    c["probes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["ok"] == false)
                );
            }
            other => panic!("{id}: status {other}: {c}"),
        }
    }
    // The baseline and the L3/L4 policies must be measurable on any machine the lab runs on.
    for id in ["none", "l3", "l4", "iptables-l4", "nftables-l4"] {
        let c = configs.iter().find(|c| c["id"] == id).unwrap();
        assert_eq!(c["status"], "measured", "{id}: {c}");
    }

    // Datapath figures: a baseline and both filters at each rule count.
    let d = &r["datapath"];
    assert!(d["baseline"]["rps"].as_f64().unwrap() > 0.0, "{d}");
    let counts: Vec<u64> = d["rule_counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for filter in ["ebpf", "iptables"] {
        for n in &counts {
            let p = d["points"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["filter"] == filter && p["rules"] == *n)
                .unwrap_or_else(|| panic!("no {filter} point for {n} rules: {d}"));
            assert_eq!(p["status"], "measured", "{p}");
            assert!(p["rps"].as_f64().unwrap() > 0.0);
        }
    }
    // The enforcer's programs were timed by the kernel's BPF statistics.
    let bpf = &d["baseline"]["bpf"];
    assert!(bpf["to_pod_runs"].as_u64().unwrap() > 0, "{d}");
    assert!(bpf["ns_per_packet"].as_f64().unwrap() > 0.0, "{d}");

    let goals = r["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 6, "{goals:?}");
    for file in [
        "results.md",
        "latency.svg",
        "latency-l3-l4.svg",
        "throughput.svg",
        "datapath.svg",
    ] {
        let text = std::fs::read_to_string(out.join(file)).unwrap_or_default();
        assert!(!text.is_empty(), "{file} written");
        if file.ends_with(".svg") {
            assert!(
                text.starts_with("<svg") && text.contains("<text"),
                "{file}: SVG with text"
            );
        }
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| No policy |") && md.contains("| HAProxy: 40 ACLs |"));
    let _ = std::fs::remove_dir_all(&out);
}

/// `lab bench scale` in a short form: a small cluster, and one past the default /24 pod range
/// (the lab widens it), each brought up, measured and taken down. Checked for sanity, never
/// for timings.
#[test]
fn bench_scale_measures_each_pod_count_and_widens_the_pod_range() {
    testkit::require_root();
    let instance = testkit::unique_name("bs");
    let out = std::env::temp_dir().join(format!("{instance}-results"));
    let run = Command::new(LAB)
        .args([
            "bench",
            "scale",
            "--pod-counts",
            "10,260",
            "--bench-instance",
            &instance,
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("running lab bench scale");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let left = leftovers(&instance);
    assert!(left.is_empty(), "left behind: {left:?}\n{stderr}");
    assert!(run.status.success(), "lab bench scale failed:\n{stderr}");
    let points: Value =
        serde_json::from_slice(&std::fs::read(out.join("scale.json")).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 2);
    for (p, (pods, range)) in points
        .iter()
        .zip([(10, "10.244.0.0/24"), (260, "10.244.0.0/23")])
    {
        assert_eq!(p["pods"], pods);
        // Plus the client and the cluster DNS.
        assert_eq!(p["total_pods"], pods + 2, "{p}");
        assert_eq!(p["pod_range"], range, "{p}");
        // Ten tiers (one identity each), the client, DNS, and the reserved ones.
        assert!(p["identities"].as_u64().unwrap() >= 12, "{p}");
        assert_eq!(p["endpoints"], pods + 2, "{p}");
        // Each workload pod is selected by ten of the hundred policies.
        assert!(
            p["policy_map_entries"].as_u64().unwrap() >= pods * 10,
            "{p}"
        );
        assert!(p["processes_pss_mib"].as_f64().unwrap() > 0.0, "{p}");
        let bursts = p["bursts"].as_array().unwrap();
        assert!(!bursts.is_empty(), "{p}");
        // The first burst is small: every packet is dropped by policy and reaches the flow log.
        assert_eq!(bursts[0]["dropped_by_policy"], bursts[0]["sent"], "{p}");
        assert_eq!(bursts[0]["recorded"], bursts[0]["sent"], "{p}");
        assert!(
            p["lossless_events_per_second"].as_f64().unwrap() > 0.0,
            "{p}"
        );
    }
}
