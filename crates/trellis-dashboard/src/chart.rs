//! Line charts as inline SVG, drawn on the server: no charting library, nothing for the
//! browser to run. A gap in a series (a sample without requests) breaks its line.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::html::esc;

/// About the size a chart is shown at, three abreast, so its text reads at its size.
const WIDTH: f64 = 420.0;
const HEIGHT: f64 = 160.0;
/// Room for the axis labels.
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// One line of a chart.
pub struct Series<'a> {
    pub label: &'a str,
    /// A CSS class (`line-a`, `line-b`) that colours the line and its legend.
    pub class: &'a str,
    pub values: Vec<Option<f64>>,
}

/// How the y axis reads.
pub struct Axis {
    /// Formats a value for the axis (`12ms`, `99%`).
    pub format: fn(f64) -> String,
    /// The lowest top of the axis, so a flat line does not fill the chart.
    pub min_top: f64,
    /// The bottom of the axis; `None`: zero.
    pub floor: Option<f64>,
}

/// A chart of `series` over the sample times `times` (oldest first), titled `title`.
pub fn line_chart(title: &str, times: &[SystemTime], series: &[Series<'_>], axis: &Axis) -> String {
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">",
        esc(title),
        esc(title)
    );
    let values = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied());
    let floor = axis.floor.unwrap_or(0.0);
    let top = values.fold(axis.min_top, f64::max);
    // From zero, a round top, so the four steps of the grid read as round numbers.
    let top = if axis.floor.is_none() {
        round_up(top)
    } else {
        top
    };
    let span = (top - floor).max(f64::EPSILON);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - ((v - floor) / span).clamp(0.0, 1.0));
    // Placed by time, so a missed sample leaves its gap.
    let first = times.first().copied();
    let seconds = |t: Option<&SystemTime>| {
        first
            .zip(t)
            .and_then(|(a, b)| b.duration_since(a).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let covered = seconds(times.last());
    let x = |i: usize| {
        if covered > 0.0 {
            LEFT + plot_w * seconds(times.get(i)) / covered
        } else {
            LEFT + plot_w
        }
    };
    for step in 0..=4 {
        let v = floor + span * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
<text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            esc(&(axis.format)(v)),
            y = y(v),
        );
    }
    if !times.is_empty() {
        // At most the history's 15 minutes: the cast cannot truncate.
        let ago = match covered as u64 {
            s @ 0..120 => format!("{s} s ago"),
            s => format!("{} min ago", s / 60),
        };
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{LEFT}\" y=\"{}\">{ago}</text>\
<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text>",
            HEIGHT - 8.0,
            WIDTH - RIGHT,
            HEIGHT - 8.0
        );
    }
    if times.is_empty() {
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">collecting samples…</text>",
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    for s in series {
        let mut path = String::new();
        let mut pen_down = false;
        for (i, v) in s.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x(i),
                        y(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                "<path class=\"{}\" d=\"{}\"/>",
                esc(s.class),
                path.trim_end()
            );
        }
        // A single sample is a dot, not an invisible line.
        if s.values.iter().flatten().count() == 1 {
            if let Some((i, v)) = s
                .values
                .iter()
                .enumerate()
                .find_map(|(i, v)| v.map(|v| (i, v)))
            {
                let _ = write!(
                    svg,
                    "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"/>",
                    esc(s.class),
                    x(i),
                    y(v)
                );
            }
        }
    }
    svg.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            "<span class=\"{}\">{}</span>",
            esc(s.class),
            esc(s.label)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// The least of 1, 2, 4, 8 or 10 times a power of ten that is at least `v`.
fn round_up(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 4.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|top| *top >= v)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        for (v, want) in [
            (70.0, 80.0),
            (10.1, 20.0),
            (4.0, 4.0),
            (0.3, 0.4),
            (0.0, 1.0),
        ] {
            assert!((round_up(v) - want).abs() < 1e-9, "{v} → {}", round_up(v));
        }
    }

    #[test]
    fn gaps_break_the_line() {
        let times: Vec<SystemTime> = (0..4)
            .map(|i| SystemTime::UNIX_EPOCH + Duration::from_secs(10 * i))
            .collect();
        let svg = line_chart(
            "Latency",
            &times,
            &[Series {
                label: "p50",
                class: "line-a",
                values: vec![Some(1.0), Some(2.0), None, Some(3.0)],
            }],
            &Axis {
                format: |v| format!("{v:.0}ms"),
                min_top: 1.0,
                floor: None,
            },
        );
        let path = svg
            .split("d=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .expect("a path");
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert!(svg.contains("now"));
    }
}
