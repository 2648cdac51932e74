//! The report's two plots, with `plotters` into SVG strings (as
//! `report::plot` draws bench-report's): RSS against ready tasks (one line per
//! durability) and RSS against open connections (idle, and sending).

use plotters::prelude::*;

use super::record::Record;

pub const TASK_PLOT: &str = "rss-tasks.svg";
pub const CONN_PLOT: &str = "rss-connections.svg";

const FONT: &str = "sans-serif";
const MIB: f64 = 1024.0 * 1024.0;
const COLOURS: [RGBColor; 3] = [RGBColor(31, 89, 168), RGBColor(204, 51, 51), RGBColor(60, 150, 80)];

/// One named line of (x, y) points.
type Series = (String, Vec<(f64, f64)>);

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// RSS (MiB) against ready tasks, one line per durability.
pub fn task_plot(records: &[Record]) -> Result<String, String> {
    let mut series: Vec<Series> = Vec::new();
    for record in records {
        if let Record::TaskRss { durability, tasks, rss_bytes, .. } = record {
            let point = (*tasks as f64, *rss_bytes as f64 / MIB);
            match series.iter_mut().find(|(name, _)| name == durability) {
                Some((_, points)) => points.push(point),
                None => series.push((durability.clone(), vec![point])),
            }
        }
    }
    line_svg("Server RSS against ready tasks (100-byte payloads)", "ready tasks", "RSS (MiB)", &series)
}

/// RSS (MiB) against open connections: the idle ones as a line from the
/// server with none, the sending ones as their own point(s).
pub fn conn_plot(records: &[Record]) -> Result<String, String> {
    let mut idle = Vec::new();
    let mut sending = Vec::new();
    for record in records {
        if let Record::ConnRss { connections, rate_per_conn, rss_bytes, .. } = record {
            let point = (*connections as f64, *rss_bytes as f64 / MIB);
            match rate_per_conn {
                None => idle.push(point),
                Some(_) => sending.push(point),
            }
        }
    }
    let series = vec![("idle".to_string(), idle), ("1 enqueue/s each".to_string(), sending)];
    line_svg("Server RSS against open connections (memory mode)", "connections", "RSS (MiB)", &series)
}

/// Lines with their points marked, a legend, axes from 0.
fn line_svg(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<String, String> {
    let points = || series.iter().flat_map(|(_, p)| p.iter());
    if points().next().is_none() {
        return Err("no data".into());
    }
    let x_max = points().map(|p| p.0).fold(0.0, f64::max).max(1.0) * 1.05;
    let y_max = points().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 17))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| count_label(*v))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(err)?;
        for (index, (name, points)) in series.iter().enumerate().filter(|(_, (_, p))| !p.is_empty()) {
            let colour = COLOURS[index % COLOURS.len()];
            let mut points = points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(err)?
                .label(name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 13))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// 10000000 → "10M", 50000 → "50k".
fn count_label(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_plot_is_svg_with_one_line_per_durability() {
        let records: Vec<Record> =
            [("memory", 0, 10), ("memory", 1_000_000, 240), ("sync", 0, 20), ("sync", 1_000_000, 300)]
                .into_iter()
                .map(|(durability, tasks, mib)| Record::TaskRss {
                    durability: durability.into(),
                    tasks,
                    payload_bytes: 100,
                    rss_bytes: mib << 20,
                    rss_empty_bytes: 0,
                    bytes_per_task: None,
                    rss_loaded_bytes: mib << 20,
                    rss_peak_bytes: mib << 20,
                    preload_seconds: 0.0,
                })
                .collect();
        let svg = task_plot(&records).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["memory", "sync", "ready tasks", "1M"] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(task_plot(&[]).is_err(), "nothing to draw");
    }

    #[test]
    fn count_labels() {
        assert_eq!(count_label(10_000_000.0), "10M");
        assert_eq!(count_label(2_500.0), "2.5k");
        assert_eq!(count_label(16.0), "16");
    }
}
