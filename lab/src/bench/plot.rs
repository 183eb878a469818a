//! SVG plots of a bench run with plotters' SVG backend (text is written as SVG `<text>`, sized by
//! plotters' built-in estimate: no font files are read, so plots render offline anywhere).
//!
//! - `latency.svg`: latency by percentile for every measured configuration, both axes
//!   logarithmic (the x axis is 1/(1 − p), so 90%, 99%, 99.9% … are evenly spaced), like the
//!   paper's figure 2; `latency-l3-l4.svg` without the L7 configurations, like its figure 3.
//! - `throughput.svg`: maximum throughput (closed loop) and achieved rate (open loop) per
//!   configuration, like figure 4.
//! - `datapath.svg`: per-packet cost against the number of rules (eBPF, iptables).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::report::{ConfigResult, Results};

const SIZE: (u32, u32) = (960, 600);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

pub fn all(r: &Results, out: &Path) -> Result<()> {
    let measured: Vec<&ConfigResult> = r.configs.iter().filter(|c| c.open_loop.is_some()).collect();
    if !measured.is_empty() {
        let title = format!(
            "Latency by percentile at {} req/s requested ({} connections)",
            r.settings.rate, r.settings.connections
        );
        latency(&measured, &title, &out.join("latency.svg"))?;
        let low: Vec<&ConfigResult> = measured
            .iter()
            .copied()
            .filter(|c| c.layer != "L7")
            .collect();
        if !low.is_empty() {
            latency(
                &low,
                &format!("{title}: without L7"),
                &out.join("latency-l3-l4.svg"),
            )?;
        }
        throughput(&measured, &out.join("throughput.svg"))?;
    }
    if let Some(d) = &r.datapath {
        datapath(d, &out.join("datapath.svg"))?;
    }
    Ok(())
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

fn percentile_label(x: f64) -> String {
    // x = 1 / (1 − p)
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        "0%".into()
    } else {
        let digits = (x.log10().round() as i32 - 2).max(0) as usize;
        format!("{p:.digits$}%")
    }
}

fn latency(configs: &[&ConfigResult], title: &str, path: &Path) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = configs
        .iter()
        .map(|c| {
            let pts = c
                .open_loop
                .as_ref()
                .map(|o| {
                    o.spectrum
                        .iter()
                        .filter(|(p, _)| *p < 100.0)
                        .map(|(p, v)| (1.0 / (1.0 - p / 100.0), (*v as f64 / 1000.0).max(0.001)))
                        .collect()
                })
                .unwrap_or_default();
            let mut name = c.title.clone();
            if c.open_loop.as_ref().is_some_and(|o| o.saturated) {
                name.push_str(" (saturated)");
            }
            (name, pts)
        })
        .collect();
    let ys = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1));
    let (lo, hi) = ys.fold((f64::MAX, 0f64), |(a, b), y| (a.min(y), b.max(y)));
    let (lo, hi) = if lo > hi { (0.01, 1.0) } else { (lo, hi) };
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1f64..100_000f64).log_scale(),
            ((lo / 1.5)..(hi * 1.5)).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms, log scale)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.3}")
            }
        })
        .draw()
        .map_err(err)?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn throughput(configs: &[&ConfigResult], path: &Path) -> Result<()> {
    let n = configs.len();
    let bars: Vec<(String, f64, f64)> = configs
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                c.max_throughput.as_ref().map_or(0.0, |m| m.rps),
                c.open_loop.as_ref().map_or(0.0, |o| o.achieved_rps),
            )
        })
        .collect();
    let top = bars.iter().map(|b| b.1.max(b.2)).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Maximum throughput (closed loop) and achieved rate (open loop)",
            ("sans-serif", 18),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(err)?;
    let ids: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < ids.len() {
                ids[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("Requests per second")
        .draw()
        .map_err(err)?;
    let (max_c, open_c) = (color(0), color(1));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + 0.12, 0.0), (x + 0.5, b.1)], max_c.filled())
        }))
        .map_err(err)?
        .label("max throughput (closed loop)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], max_c.filled()));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + 0.5, 0.0), (x + 0.88, b.2)], open_c.filled())
        }))
        .map_err(err)?
        .label("achieved at the requested rate (open loop)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], open_c.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn datapath(d: &super::datapath::Datapath, path: &Path) -> Result<()> {
    let ebpf: Vec<(f64, f64)> = d
        .points
        .iter()
        .filter(|p| p.filter == "ebpf")
        .filter_map(|p| Some((p.rules.max(1) as f64, p.bpf.as_ref()?.ns_per_packet)))
        .collect();
    let ipt: Vec<(f64, f64)> = d
        .points
        .iter()
        .filter(|p| p.filter == "iptables")
        .filter_map(|p| Some((p.rules.max(1) as f64, p.extra_ns_per_packet?.max(1.0))))
        .collect();
    let ebpf_extra: Vec<(f64, f64)> = d
        .points
        .iter()
        .filter(|p| p.filter == "ebpf")
        .filter_map(|p| Some((p.rules.max(1) as f64, p.extra_ns_per_packet?.max(1.0))))
        .collect();
    let xs = ebpf.iter().chain(&ipt).map(|p| p.0);
    let xmax = xs.fold(10.0, f64::max) * 2.0;
    let ys = ebpf.iter().chain(&ipt).chain(&ebpf_extra).map(|p| p.1);
    let ymax = ys.fold(10.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Per-packet cost as rules grow", ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d((0.7f64..xmax).log_scale(), (1f64..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("Rules (log scale)")
        .y_desc("ns per packet (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let lines = [
        ("lab eBPF: from_pod + to_pod run time (BPF stats)", ebpf, 0),
        (
            "lab eBPF: extra time per packet vs no policy (throughput)",
            ebpf_extra,
            2,
        ),
        (
            "iptables: extra time per packet vs no firewall (throughput)",
            ipt,
            3,
        ),
    ];
    for (name, pts, ci) in lines {
        let c = color(ci);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
