//! `--plot out.svg`: the latency CDF of each class (left) and the operations completed per
//! second (right), as a plain SVG any browser opens.

use std::fmt::Write;

use super::CurpReport;
use crate::report::Latencies;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 280.0;
const MARGIN: f64 = 50.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
const NAMES: [&str; 4] = ["strong read", "strong write", "weak read", "weak write"];

pub fn svg(report: &CurpReport, classes: &[Latencies; 4]) -> String {
    let width = 2.0 * (PANEL_W + 2.0 * MARGIN);
    let height = PANEL_H + 2.0 * MARGIN;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    cdfs(&mut out, classes);
    series(&mut out, report, PANEL_W + 2.0 * MARGIN);
    out.push_str("</svg>\n");
    out
}

fn axes(out: &mut String, left: f64, title: &str, x_label: &str, x_max: f64, y_label: &str) {
    let (x0, y0) = (left + MARGIN, MARGIN + PANEL_H);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-weight="bold">{title}</text>"#,
        x0,
        MARGIN - 20.0
    );
    let _ = writeln!(
        out,
        r#"<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{MARGIN}" stroke="black"/>"#,
        x0 + PANEL_W
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}">{x_label} (max {x_max:.2})</text><text x="{}" y="{}">{y_label}</text>"#,
        x0 + PANEL_W / 3.0,
        y0 + 35.0,
        left + 5.0,
        MARGIN - 5.0
    );
}

fn cdfs(out: &mut String, classes: &[Latencies; 4]) {
    let quantiles: Vec<f64> = (0..=100)
        .map(|q| f64::from(q) / 100.0)
        .chain([0.995, 0.999])
        .collect();
    let x_max = classes
        .iter()
        .filter(|latencies| latencies.count() > 0)
        .map(|latencies| latencies.millis_at(0.999))
        .fold(0.001, f64::max);
    axes(out, 0.0, "latency CDF", "ms", x_max, "fraction");
    for (index, latencies) in classes.iter().enumerate() {
        if latencies.count() == 0 {
            continue;
        }
        let mut points = quantiles.iter().map(|&q| {
            let x = MARGIN + latencies.millis_at(q) / x_max * PANEL_W;
            let y = MARGIN + PANEL_H - q * PANEL_H;
            format!("{x:.1},{y:.1}")
        });
        let points = points.by_ref().collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{points}"/><text x="{}" y="{}" fill="{}">{}</text>"#,
            COLORS[index],
            MARGIN + PANEL_W - 90.0,
            MARGIN + PANEL_H - 60.0 + 15.0 * index as f64,
            COLORS[index],
            NAMES[index]
        );
    }
}

fn series(out: &mut String, report: &CurpReport, left: f64) {
    let seconds = report.per_second.len().max(1) as f64;
    let y_max = report.per_second.iter().copied().max().unwrap_or(1).max(1) as f64;
    axes(
        out,
        left,
        "ops per second",
        "second",
        seconds,
        &format!("ops/s (max {y_max})"),
    );
    let points = report
        .per_second
        .iter()
        .enumerate()
        .map(|(second, &ops)| {
            let x = left + MARGIN + (second as f64 + 0.5) / seconds * PANEL_W;
            let y = MARGIN + PANEL_H - ops as f64 / y_max * PANEL_H;
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="black" stroke-width="2" points="{points}"/>"#
    );
}
