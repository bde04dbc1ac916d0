//! Charts drawn on the server: a time series as lines over labelled axes,
//! as SVG the page carries inline (no script, no chart library), with its
//! numbers in a table for those who do not see the drawing.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

/// One line of a chart: a value per instant, `None` where there is none
/// (the line breaks there).
pub struct Series {
    pub label: String,
    /// Drawn in the second colour.
    pub alt: bool,
    pub points: Vec<(DateTime<Utc>, Option<f64>)>,
}

pub struct LineChart<'a> {
    /// Said by the drawing's title and label, and the table's caption.
    pub title: &'a str,
    /// The unit of the values, for the axis and the table ("orders", "s").
    pub unit: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub series: &'a [Series],
    /// Fill the area under the first series.
    pub area: bool,
}

// Drawn about as wide as a card shows it, so that its text keeps its size.
const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 34.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 24.0;
/// How many steps the value axis has.
const Y_STEPS: u32 = 4;
/// About how many instants the time axis names.
const X_LABELS: i64 = 5;

/// A round step (1, 2 or 5 times a power of ten) for an axis up to `max`.
fn nice_step(max: f64) -> f64 {
    let raw = (max / f64::from(Y_STEPS)).max(f64::MIN_POSITIVE);
    let magnitude = 10_f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(if max <= 4.0 { 1.0 } else { 0.0 })
}

/// A value as the axis and the table write it.
pub fn number(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn hh_mm(t: DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

pub fn line_chart(chart: &LineChart<'_>) -> Markup {
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
        .fold(0.0_f64, f64::max);
    let step = nice_step(max);
    let top = (step * (max / step).ceil()).max(step);
    let span = (chart.to - chart.from).num_milliseconds().max(1) as f64;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: DateTime<Utc>| {
        LEFT + ((t - chart.from).num_milliseconds() as f64 / span).clamp(0.0, 1.0) * plot_w
    };
    let y = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let base = TOP + plot_h;
    // Each series as runs of consecutive values: a gap breaks the line.
    let paths: Vec<(String, bool)> = chart
        .series
        .iter()
        .map(|s| {
            let mut d = String::new();
            let mut pen_down = false;
            for (t, v) in &s.points {
                match v {
                    Some(v) => {
                        let cmd = if pen_down { 'L' } else { 'M' };
                        d.push_str(&format!("{cmd}{:.1},{:.1} ", x(*t), y(*v)));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            (d.trim_end().to_owned(), s.alt)
        })
        .collect();
    let area = chart.series.first().filter(|_| chart.area).and_then(|s| {
        let known: Vec<(DateTime<Utc>, f64)> = s
            .points
            .iter()
            .filter_map(|(t, v)| v.map(|v| (*t, v)))
            .collect();
        let (first, last) = (known.first()?, known.last()?);
        let mut d = format!("M{:.1},{base:.1} ", x(first.0));
        for (t, v) in &known {
            d.push_str(&format!("L{:.1},{:.1} ", x(*t), y(*v)));
        }
        d.push_str(&format!("L{:.1},{base:.1} Z", x(last.0)));
        Some(d)
    });
    let minutes = (chart.to - chart.from).num_minutes().max(1);
    let label_every = ((minutes + X_LABELS - 1) / X_LABELS).max(1);
    let x_labels: Vec<DateTime<Utc>> = (0..=minutes)
        .step_by(usize::try_from(label_every).unwrap_or(1))
        .map(|m| chart.from + chrono::Duration::minutes(m))
        .collect();
    let instants: Vec<DateTime<Utc>> = chart
        .series
        .first()
        .map(|s| s.points.iter().map(|(t, _)| *t).collect())
        .unwrap_or_default();
    html! {
        figure.chart-figure {
            svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(chart.title)
                preserveAspectRatio="xMidYMid meet" {
                title { (chart.title) }
                @for i in 0..=Y_STEPS {
                    @let v = top * f64::from(i) / f64::from(Y_STEPS);
                    @let yy = format!("{:.1}", y(v));
                    line class=(if i == 0 { "axis" } else { "grid-line" })
                        x1=(LEFT) x2=(WIDTH - RIGHT) y1=(yy) y2=(yy) {}
                    text x=(LEFT - 6.0) y=(yy) dy="3" text-anchor="end" { (number(v)) }
                }
                line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(base) {}
                @for t in &x_labels {
                    text x=(format!("{:.1}", x(*t))) y=(HEIGHT - 6.0) text-anchor="middle" { (hh_mm(*t)) }
                }
                text x="4" y="12" { (chart.unit) }
                @if let Some(d) = &area { path.area d=(d) {} }
                @for (d, alt) in &paths {
                    @if !d.is_empty() {
                        path class=(if *alt { "line alt" } else { "line" }) d=(d) {}
                    }
                }
                // A value with no neighbour draws no line: a dot shows it.
                @for s in chart.series {
                    @for (i, (t, v)) in s.points.iter().enumerate() {
                        @let lonely = i.checked_sub(1).and_then(|p| s.points.get(p)).is_none_or(|(_, v)| v.is_none())
                            && s.points.get(i + 1).is_none_or(|(_, v)| v.is_none());
                        @if let (Some(v), true) = (v, lonely) {
                            circle class=(if s.alt { "dot alt" } else { "dot" })
                                cx=(format!("{:.1}", x(*t))) cy=(format!("{:.1}", y(*v))) r="2.5" {}
                        }
                    }
                }
                // The legend, right-aligned above the plot.
                @for (i, s) in chart.series.iter().enumerate().rev() {
                    @let right = WIDTH - RIGHT - 64.0 * (chart.series.len() - 1 - i) as f64;
                    line class=(if s.alt { "line alt" } else { "line" })
                        x1=(right - 58.0) x2=(right - 44.0) y1="10" y2="10" {}
                    text x=(right - 40.0) y="13" { (s.label) }
                }
            }
            details {
                summary.small { "Table" }
                div.table-wrap {
                    table {
                        caption.small.muted { (chart.title) " (" (chart.unit) ")" }
                        thead { tr {
                            th { "Minute (UTC)" }
                            @for s in chart.series { th.num { (s.label) } }
                        } }
                        tbody {
                            @for (row, t) in instants.iter().enumerate() {
                                tr {
                                    td { (hh_mm(*t)) }
                                    @for s in chart.series {
                                        td.num {
                                            @match s.points.get(row).and_then(|(_, v)| *v) {
                                                Some(v) => (number(v)),
                                                None => span.muted { "–" },
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 - 1_700_000_000 % 60 + minute * 60, 0)
            .unwrap_or_default()
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(3.0), 1.0);
        assert_eq!(nice_step(9.0), 5.0);
        assert_eq!(nice_step(40.0), 10.0);
        assert_eq!(nice_step(130.0), 50.0);
        assert_eq!(nice_step(0.7), 1.0);
    }

    #[test]
    fn a_chart_is_labelled_breaks_at_gaps_and_lists_its_numbers() {
        let series = [Series {
            label: "p95".into(),
            alt: false,
            points: vec![
                (at(0), Some(1.0)),
                (at(1), Some(2.5)),
                (at(2), None),
                (at(3), Some(4.0)),
            ],
        }];
        let html = line_chart(&LineChart {
            title: "Paid after",
            unit: "s",
            from: at(0),
            to: at(3),
            series: &series,
            area: false,
        })
        .into_string();
        assert!(html.contains("role=\"img\"") && html.contains("<title>Paid after</title>"));
        // Two runs: the gap lifts the pen.
        assert_eq!(
            html.matches(" M").count() + html.matches("\"M").count(),
            2,
            "{html}"
        );
        assert!(html.contains("<td class=\"num\">2.50</td>"), "{html}");
        assert!(html.contains("–"));
    }
}
