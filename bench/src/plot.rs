//! PNG charts from result files: connections over time, and the publish → delivery latency
//! CDF, one line per run (floor, raw, STOMP), so a run's figures are seen next to the floor's.

use std::path::Path;

use plotters::coord::types;
use plotters::prelude::*;
use serde_json::Value;

const COLORS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    BLUE,
    RED,
    GREEN,
    RGBColor(200, 120, 0),
    RGBColor(140, 0, 160),
];

/// Registers a system font for labels (plotters draws text with it).
fn font() -> Result<(), String> {
    for path in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ] {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path}: not a usable font"));
        }
    }
    Err("no TTF font found (apt-get install fonts-dejavu-core)".into())
}

fn points(v: &Value, key: &str) -> Vec<(f64, f64)> {
    v[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(files: &[std::path::PathBuf], out: &Path) -> Result<(), String> {
    font()?;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let runs: Vec<(String, Value)> = files
        .iter()
        .map(|f| {
            let v = serde_json::from_str(
                &std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
            )
            .map_err(|e| format!("{}: {e}", f.display()))?;
            Ok((
                f.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                v,
            ))
        })
        .collect::<Result<_, String>>()?;
    chart(
        &out.join("connections.png"),
        "Connections over time",
        "seconds since start",
        "connections",
        runs.iter()
            .map(|(n, v)| (n.as_str(), points(v, "connect_timeline"))),
    )?;
    chart(
        &out.join("latency-cdf.png"),
        "Publish → delivery latency (CDF over all deliveries)",
        "milliseconds",
        "fraction delivered",
        runs.iter()
            .map(|(n, v)| (n.as_str(), points(v, "latency_cdf"))),
    )
}

type Root<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;
type Axes<'a, 'b> =
    ChartContext<'b, BitMapBackend<'a>, Cartesian2d<types::RangedCoordf64, types::RangedCoordf64>>;

/// A white 960×540 PNG canvas at `path`.
fn canvas(path: &Path) -> Result<Root<'_>, String> {
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(root)
}

/// Title and linear axes on `root`, the same frame for every chart.
fn axes<'a, 'b>(
    root: &'b Root<'a>,
    path: &Path,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Axes<'a, 'b>, String> {
    ChartBuilder::on(root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(90)
        .build_cartesian_2d(x, y)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn chart<'a>(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: impl Iterator<Item = (&'a str, Vec<(f64, f64)>)>,
) -> Result<(), String> {
    let series: Vec<_> = series.filter(|(_, p)| !p.is_empty()).collect();
    let max = |f: fn(&(f64, f64)) -> f64| {
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(f))
            .fold(0.0f64, f64::max)
            .max(1e-9)
    };
    let (x_max, y_max) = (max(|p| p.0) * 1.05, max(|p| p.1) * 1.05);
    let root = canvas(path)?;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut c = axes(&root, path, title, 0.0..x_max, 0.0..y_max)?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// One bar per server (`compare`): a value that is not measured gets no bar.
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    rows: &[(String, Option<f64>)],
) -> Result<(), String> {
    font()?;
    let y_max = rows
        .iter()
        .filter_map(|r| r.1)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = rows.len().max(1);
    let root = canvas(path)?;
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut c = axes(&root, path, title, 0.0..n as f64, 0.0..y_max)?;
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                rows.get(i).map(|r| r.0.clone()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (_, v)) in rows.iter().enumerate() {
        if let Some(v) = v {
            let color = COLORS[i % COLORS.len()];
            c.draw_series([Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                color.filled(),
            )])
            .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))
}
