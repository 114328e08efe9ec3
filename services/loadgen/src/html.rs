//! The HTML report: one self-contained page (inline SVG charts and CSS, no script, nothing fetched)
//! built from a [`Report`], so it can also be rendered later from a JSON report
//! (`tandem-loadgen html`).
//!
//! Charts: latency per second (p50, p99 of ack and remote latency), throughput per second, the
//! measured latency distributions, and CPU, RSS and TCP send queues of every watched process, the
//! measuring window shaded; then the text table of the run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::report::{Bucket, Report};

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 40.0;
const COLORS: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/// Writes the page of `report` to `path`.
pub fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, render(report)).with_context(|| format!("write {}", path.display()))
}

/// One line of a chart.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

impl Series {
    fn new(name: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        Self { name: name.into(), points: points.into_iter().collect() }
    }
}

/// A line chart.
struct Chart {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    /// Logarithmic x axis (latency distributions).
    log_x: bool,
    series: Vec<Series>,
    /// An x range to shade: the measuring window.
    band: Option<(f64, f64)>,
}

/// The page.
pub fn render(report: &Report) -> String {
    let title = format!("tandem-loadgen {} — run {}", report.preset, report.run_id);
    let window = report.window;
    let band = (window.end_secs > window.start_secs).then_some((window.start_secs, window.end_secs));
    let timeline = &report.timeline;
    let per_second = |f: fn(&crate::monitor::Second) -> f64| -> Vec<(f64, f64)> {
        timeline.iter().map(|s| (s.t, f(s))).collect()
    };
    let mut charts = vec![
        Chart {
            title: "Latency per second".into(),
            x_label: "seconds since start",
            y_label: "ms",
            log_x: false,
            series: vec![
                Series::new("ack p50", per_second(|s| s.ack_p50_ms)),
                Series::new("ack p99", per_second(|s| s.ack_p99_ms)),
                Series::new("remote p50", per_second(|s| s.remote_p50_ms)),
                Series::new("remote p99", per_second(|s| s.remote_p99_ms)),
            ],
            band,
        },
        Chart {
            title: "Throughput per second".into(),
            x_label: "seconds since start",
            y_label: "per second",
            log_x: false,
            series: vec![
                Series::new("ops sent", per_second(|s| s.sent as f64)),
                Series::new("keystrokes acked", per_second(|s| s.acked as f64)),
            ],
            band,
        },
        Chart {
            title: "Latency distribution (measured)".into(),
            x_label: "ms (logarithmic)",
            y_label: "% of samples",
            log_x: true,
            series: vec![
                Series::new("ack", distribution(&report.histograms.ack)),
                Series::new("remote", distribution(&report.histograms.remote)),
            ],
            band: None,
        },
    ];
    if report.connect.is_some() || timeline.iter().any(|s| s.clients != timeline[0].clients) {
        charts.push(Chart {
            title: "Clients connected".into(),
            x_label: "seconds since start",
            y_label: "clients",
            log_x: false,
            series: vec![Series::new("clients", per_second(|s| s.clients as f64))],
            band,
        });
    }
    let processes = &report.processes;
    charts.push(Chart {
        title: "CPU of the watched processes".into(),
        x_label: "seconds since start",
        y_label: "% of one core",
        log_x: false,
        series: processes
            .iter()
            .map(|p| Series::new(&p.name, p.samples.iter().skip(1).map(|s| (s.t, s.cpu_pct))))
            .collect(),
        band,
    });
    charts.push(Chart {
        title: "RSS of the watched processes".into(),
        x_label: "seconds since start",
        y_label: "MiB",
        log_x: false,
        series: processes
            .iter()
            .map(|p| Series::new(&p.name, p.samples.iter().map(|s| (s.t, s.rss_mib))))
            .collect(),
        band,
    });
    charts.push(Chart {
        title: "TCP send queues of the watched processes (kernel memory, not in RSS)".into(),
        x_label: "seconds since start",
        y_label: "MiB",
        log_x: false,
        series: processes
            .iter()
            .map(|p| Series::new(&p.name, p.samples.iter().map(|s| (s.t, s.send_queue_mib))))
            .collect(),
        band,
    });

    let verdict = if report.is_clean() { "clean" } else { "NOT CLEAN" };
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:900px}}\
         pre{{background:#f6f6f6;padding:12px;overflow-x:auto;font-size:12px}}\
         svg{{display:block;margin:8px 0 20px}} .clean{{color:#2a7}} .dirty{{color:#c22}}\
         </style></head><body>\n<h1>{}</h1>\n<p>{} — <b class=\"{}\">{verdict}</b>. Ack p50 {:.2} ms, p99 {:.2} ms; \
         remote p50 {:.2} ms, p99 {:.2} ms; {:.1} keystrokes/s acked in {:.1} committed ops/s; {} errors. \
         The measuring window is shaded.</p>\n",
        escape(&title),
        escape(&title),
        escape(&report.workload),
        if report.is_clean() { "clean" } else { "dirty" },
        report.ack_latency_ms.p50,
        report.ack_latency_ms.p99,
        report.remote_latency_ms.p50,
        report.remote_latency_ms.p99,
        report.rates.acked,
        report.rates.committed_ops,
        report.errors.total,
    );
    for chart in &charts {
        page.push_str(&svg(chart));
        page.push('\n');
    }
    let _ = write!(page, "<h2>Report</h2>\n<pre>{}</pre>\n</body></html>\n", escape(&report.table()));
    page
}

/// The share of samples per bucket, as a step line over each bucket's range.
fn distribution(buckets: &[Bucket]) -> Vec<(f64, f64)> {
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let step = 10f64.powf(0.1);
    buckets
        .iter()
        .flat_map(|b| {
            let share = b.count as f64 * 100.0 / total.max(1) as f64;
            [(b.le_ms / step, share), (b.le_ms, share)]
        })
        .collect()
}

fn svg(chart: &Chart) -> String {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let points =
        chart.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_min, mut x_max, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in points {
        if chart.log_x && x <= 0.0 {
            continue;
        }
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-size=\"11\">\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        escape(&chart.title)
    );
    if !x_min.is_finite() {
        let _ = write!(out, "<text x=\"{LEFT}\" y=\"{}\" fill=\"#888\">no data</text></svg>", TOP + 20.0);
        return out;
    }
    // Axes: a linear x from 0 (time) or a logarithmic one over whole decades; y from 0.
    let (x_lo, x_hi) = if chart.log_x {
        (10f64.powf(x_min.log10().floor()), 10f64.powf(x_max.log10().ceil().max(x_min.log10().floor() + 1.0)))
    } else {
        (x_min.min(0.0), x_max.max(x_min + 1.0))
    };
    let y_ticks = nice_ticks(if y_max > 0.0 { y_max } else { 1.0 });
    let y_hi = *y_ticks.last().unwrap_or(&1.0);
    let sx = |x: f64| {
        let f = if chart.log_x {
            (x.log10() - x_lo.log10()) / (x_hi.log10() - x_lo.log10())
        } else {
            (x - x_lo) / (x_hi - x_lo)
        };
        LEFT + f.clamp(0.0, 1.0) * plot_w
    };
    let sy = |y: f64| TOP + plot_h - (y / y_hi).clamp(0.0, 1.0) * plot_h;

    if let Some((from, to)) = chart.band {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#eef4ff\"/>",
            sx(from),
            (sx(to) - sx(from)).max(0.0)
        );
    }
    for &y in &y_ticks {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            sy(y) + 4.0,
            label(y),
            y = sy(y)
        );
    }
    let x_ticks = if chart.log_x {
        let mut ticks = vec![x_lo];
        while *ticks.last().unwrap_or(&x_hi) < x_hi * 0.999 {
            ticks.push(ticks.last().unwrap_or(&x_hi) * 10.0);
        }
        ticks
    } else {
        nice_ticks(x_hi - x_lo).into_iter().map(|t| t + x_lo).filter(|&t| t <= x_hi).collect()
    };
    for &x in &x_ticks {
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + plot_h,
            TOP + plot_h + 14.0,
            label(x),
            x = sx(x)
        );
    }
    let _ = write!(
        out,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">{}</text>",
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        chart.x_label,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        chart.y_label
    );
    let mut legend_x = WIDTH - RIGHT;
    for (i, series) in chart.series.iter().enumerate().rev() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_x || *x > 0.0))
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                path.join(" "),
                escape(&series.name)
            );
        }
        let width = 7.0 * series.name.chars().count() as f64 + 22.0;
        legend_x -= width;
        let _ = write!(
            out,
            "<rect x=\"{legend_x:.1}\" y=\"22\" width=\"10\" height=\"3\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"27\">{}</text>",
            legend_x + 14.0,
            escape(&series.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// Ticks from 0 to at least `max` at a round step (1, 2 or 5 × 10^k), about five of them.
fn nice_ticks(max: f64) -> Vec<f64> {
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(magnitude * 10.0);
    let n = (max / step).ceil() as usize;
    (0..=n).map(|i| i as f64 * step).collect()
}

/// A tick label: short, no needless decimals.
fn label(v: f64) -> String {
    if v == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{}", (v * 10.0).round() / 10.0)
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(nice_ticks(9.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let small = nice_ticks(0.3);
        assert_eq!(small.len(), 4);
        assert!((small[3] - 0.3).abs() < 1e-9);
        assert_eq!(nice_ticks(1234.0), vec![0.0, 500.0, 1000.0, 1500.0]);
    }

    #[test]
    fn a_chart_without_data_says_so_and_text_is_escaped() {
        let chart = Chart {
            title: "a <b>".into(),
            x_label: "x",
            y_label: "y",
            log_x: true,
            series: vec![Series::new("s", [])],
            band: None,
        };
        let svg = svg(&chart);
        assert!(svg.contains("no data") && svg.contains("a &lt;b&gt;"), "{svg}");
    }

    #[test]
    fn distributions_are_shares_over_each_bucket() {
        let buckets = [Bucket { le_ms: 1.0, count: 1 }, Bucket { le_ms: 10.0, count: 3 }];
        let d = distribution(&buckets);
        assert_eq!(d.len(), 4);
        assert_eq!((d[1], d[3]), ((1.0, 25.0), (10.0, 75.0)));
    }
}
