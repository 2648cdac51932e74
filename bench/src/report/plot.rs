//! The report's plots, drawn with `plotters` into SVG strings: throughput bars
//! per scenario (grouped by row, one bar per system) and latency-percentile
//! curves (p50, p99, p99.9, max; one panel per offered load, one curve per
//! system). SVG keeps them small, diffable and free of font files: the backend
//! writes `<text>` elements and the viewer picks the font.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::model::{Durability, Load, Row, Scenario, System};
use super::stats::Results;
use super::targets::{fmt_rate, fmt_us};

/// One plot, ready to be written to `name` in the plots' folder.
#[derive(Clone, Debug)]
pub struct Plot {
    pub name: String,
    pub svg: String,
}

pub fn throughput_plot_name(scenario: Scenario) -> String {
    format!("{scenario}.svg")
}

pub fn latency_plot_name(durability: Durability) -> String {
    format!("latency-{}.svg", durability.key())
}

/// Each system keeps its colour in every plot (ours in blues).
fn colour(system: System) -> RGBColor {
    match system {
        System::TqxBinary => RGBColor(31, 89, 168),
        System::TqxHttp => RGBColor(120, 170, 230),
        System::Redis => RGBColor(204, 51, 51),
        System::RedisReliable => RGBColor(240, 150, 60),
        System::Beanstalkd => RGBColor(60, 150, 80),
        System::RabbitMq => RGBColor(255, 102, 0),
        System::Nats => RGBColor(120, 60, 160),
    }
}

const FONT: &str = "sans-serif";

/// Every plot the results have data for.
pub fn render_all(results: &Results) -> Vec<Plot> {
    let mut plots = Vec::new();
    for scenario in Scenario::ALL {
        if scenario == Scenario::Latency {
            continue;
        }
        let groups = throughput_groups(results, scenario);
        if groups.is_empty() {
            continue;
        }
        let title = format!("{} — median {}", scenario.title(), scenario.unit());
        match throughput_svg(&title, scenario.unit(), &groups) {
            Ok(svg) => plots.push(Plot { name: throughput_plot_name(scenario), svg }),
            Err(e) => eprintln!("bench-report: plot of {scenario} not drawn: {e}"),
        }
    }
    for durability in Durability::ALL {
        let panels = latency_panels(results, durability);
        if panels.is_empty() {
            continue;
        }
        let title = format!("Latency under offered load, {durability} (open loop, corrected for coordinated omission)");
        match latency_svg(&title, &panels) {
            Ok(svg) => plots.push(Plot { name: latency_plot_name(durability), svg }),
            Err(e) => eprintln!("bench-report: latency plot of {durability} not drawn: {e}"),
        }
    }
    plots
}

/// A group label for a row: its durability, plus what varies within the scenario.
fn group_label(row: &Row) -> String {
    let mut label = row.durability.key().to_string();
    if row.pipeline != 1 {
        label.push_str(&format!(" ×{}", row.pipeline));
    }
    if row.tls {
        label.push_str(" TLS");
    }
    label
}

/// (group label, [(system, throughput)]) per row, systems in [`System::ALL`] order.
pub type Groups = Vec<(String, Vec<(System, f64)>)>;

fn throughput_groups(results: &Results, scenario: Scenario) -> Groups {
    results
        .rows(scenario)
        .iter()
        .map(|row| {
            let bars = System::ALL
                .into_iter()
                .filter_map(|s| results.get(&row.cell(s)).map(|m| (s, m.throughput(scenario))))
                .collect::<Vec<_>>();
            (group_label(row), bars)
        })
        .filter(|(_, bars)| !bars.is_empty())
        .collect()
}

/// (panel title, [(system, [p50, p99, p99.9, max] µs)]) per offered load.
pub type Panels = Vec<(String, Vec<(System, [f64; 4])>)>;

fn latency_panels(results: &Results, durability: Durability) -> Panels {
    results
        .rows(Scenario::Latency)
        .iter()
        .filter(|row| row.durability == durability)
        .map(|row| {
            let mut title = match row.load {
                Some(Load::Idle) => "idle (1,000/s, 1 connection)".to_string(),
                Some(Load::Percent(p)) => format!("{p} % of the enqueue peak"),
                None => row.params(),
            };
            if let Some(idle) = row.idle {
                title.push_str(&format!(", {} idle connections open", crate::shared::thousands(u64::from(idle))));
            }
            let curves = System::ALL
                .into_iter()
                .filter_map(|s| results.get(&row.cell(s)).map(|m| (s, [m.p50_us, m.p99_us, m.p999_us, m.max_us])))
                .collect::<Vec<_>>();
            (title, curves)
        })
        .filter(|(_, curves)| !curves.is_empty())
        .collect()
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Height of the strip above a chart that holds its title and its legend.
const HEADER_PX: u32 = 58;

/// Title, then one row of legend entries (a swatch and the system's name),
/// centred; returns the area below it. A legend outside the plot never hides a
/// bar or a curve.
fn header<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
    systems: &[System],
) -> Result<DrawingArea<SVGBackend<'a>, Shift>, String> {
    let (strip, body) = root.split_vertically(HEADER_PX);
    let width = strip.dim_in_pixel().0 as i32;
    let title_style = TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    strip.draw(&Text::new(title.to_string(), (width / 2, 6), title_style)).map_err(err)?;
    // Entry width from the name's length: the SVG viewer picks the font, so
    // this is an estimate (about 7 px per character at 13 px).
    let entry_px = |s: &System| 26 + 7 * s.name().len() as i32;
    let total: i32 = systems.iter().map(entry_px).sum();
    let mut x = (width - total).max(0) / 2;
    let y = 38;
    let label_style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for system in systems {
        strip.draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour(*system).filled())).map_err(err)?;
        strip.draw(&Text::new(system.name().to_string(), (x + 19, y), label_style.clone())).map_err(err)?;
        x += entry_px(system);
    }
    Ok(body)
}

/// Grouped bars: one group per row, one bar per system, a legend of systems.
pub fn throughput_svg(title: &str, unit: &str, groups: &Groups) -> Result<String, String> {
    let mut systems: Vec<System> = groups.iter().flat_map(|(_, bars)| bars.iter().map(|(s, _)| *s)).collect();
    systems.sort();
    systems.dedup();
    let top = groups.iter().flat_map(|(_, bars)| bars.iter().map(|(_, v)| *v)).fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.1 } else { 1.0 };
    let width = (160 + groups.len() as u32 * (40 + 28 * systems.len() as u32)).clamp(640, 1400);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = header(&root, title, &systems)?;
        let mut chart = ChartBuilder::on(&body)
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..groups.len() as f64, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(unit)
            .y_label_formatter(&|v| fmt_rate(*v))
            .draw()
            .map_err(err)?;
        let pad = 0.12;
        let bar_width = (1.0 - 2.0 * pad) / systems.len().max(1) as f64;
        for (k, system) in systems.iter().enumerate() {
            let fill = colour(*system);
            let bars = groups.iter().enumerate().filter_map(|(g, (_, bars))| {
                let value = bars.iter().find(|(s, _)| s == system)?.1;
                let x0 = g as f64 + pad + k as f64 * bar_width;
                Some(Rectangle::new([(x0, 0.0), (x0 + bar_width * 0.92, value)], fill.filled()))
            });
            chart.draw_series(bars).map_err(err)?;
        }
        let label_style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, (label, _)) in groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            // backend_coord is in the root's pixels; `body` starts HEADER_PX lower.
            body.draw(&Text::new(label.clone(), (x, y - HEADER_PX as i32 + 8), label_style.clone())).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

const PERCENTILES: [&str; 4] = ["p50", "p99", "p99.9", "max"];

/// One panel per offered load: latency (log scale) at each percentile, one
/// curve per system.
pub fn latency_svg(title: &str, panels: &Panels) -> Result<String, String> {
    let mut systems: Vec<System> = panels.iter().flat_map(|(_, curves)| curves.iter().map(|(s, _)| *s)).collect();
    systems.sort();
    systems.dedup();
    let values = panels.iter().flat_map(|(_, curves)| curves.iter().flat_map(|(_, v)| v.iter().copied()));
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v.max(1.0)), hi.max(v)));
    let (y_min, y_max) = if high > 0.0 { ((low / 2.0).max(0.5), high * 2.0) } else { (1.0, 10.0) };
    let width = (40 + panels.len() as u32 * 330).max(640);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 450)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let body = header(&root, title, &systems)?;
        let areas = body.split_evenly((1, panels.len()));
        for (index, ((panel_title, curves), area)) in panels.iter().zip(areas.iter()).enumerate() {
            latency_panel(area, panel_title, curves, (y_min, y_max), index == 0)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn latency_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    curves: &[(System, [f64; 4])],
    (y_min, y_max): (f64, f64),
    first: bool,
) -> Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 14))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(if first { 64 } else { 52 })
        .build_cartesian_2d((0u32..3u32).into_segmented(), (y_min..y_max).log_scale())
        .map_err(err)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                PERCENTILES.get(*i as usize).map(|s| s.to_string()).unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| fmt_us(*v));
    if first {
        mesh.y_desc("latency µs (log)");
    }
    mesh.draw().map_err(err)?;
    for (system, percentiles) in curves {
        let stroke = colour(*system);
        let points: Vec<(SegmentValue<u32>, f64)> =
            percentiles.iter().enumerate().map(|(i, v)| (SegmentValue::CenterOf(i as u32), v.max(y_min))).collect();
        chart.draw_series(LineSeries::new(points.clone(), stroke.stroke_width(2))).map_err(err)?;
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, stroke.filled()))).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_svg_with_labels_and_legend() {
        let groups: Groups = vec![
            ("sync".into(), vec![(System::TqxBinary, 150_000.0), (System::Redis, 100_000.0)]),
            ("memory".into(), vec![(System::TqxBinary, 300_000.0)]),
        ];
        let svg = throughput_svg("t", "ops/s", &groups).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60.min(svg.len())]);
        for text in ["sync", "memory", "tqx-binary", "redis", "ops/s"] {
            assert!(svg.contains(&format!("\n{text}\n</text>")), "missing {text}");
        }
        assert!(svg.contains("<rect"));
    }

    #[test]
    fn latency_curves_survive_zeros() {
        let panels: Panels = vec![
            ("idle".into(), vec![(System::TqxBinary, [0.0, 12.0, 40.0, 900.0])]),
            ("50 %".into(), vec![(System::Redis, [20.0, 80.0, 300.0, 5_000.0])]),
        ];
        let svg = latency_svg("latency", &panels).unwrap();
        assert!(svg.contains("\np99.9\n</text>"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }
}
