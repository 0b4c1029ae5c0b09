//! Small inline SVG charts: stacked bars over time, and a strip of probe runs. No script, no
//! style attributes (the page's Content-Security-Policy allows neither): series are classes that
//! the stylesheet colours, and each bar has a `<title>` as its tooltip.

use maud::{Markup, html};

/// One bar: its tooltip and its stacked parts, bottom first (`series` names a CSS class `s-…`).
pub(super) struct Column {
    pub title: String,
    pub parts: Vec<(&'static str, u32)>,
}

/// Width of one bar slot in the viewBox.
const SLOT: u32 = 10;

/// Stacked bars, one per column, scaled to the tallest; `height` in viewBox units.
pub(super) fn stacked(columns: &[Column], height: u32, label: &str) -> Markup {
    let max = columns.iter().map(|c| c.parts.iter().map(|p| p.1).sum::<u32>()).max().unwrap_or(0).max(1);
    let width = SLOT * columns.len().max(1) as u32;
    let scale = f64::from(height) / f64::from(max);
    // Each part's class, top and height, stacked from the bottom.
    let stacks: Vec<Vec<(String, f64, f64)>> = columns
        .iter()
        .map(|col| {
            let mut top = f64::from(height);
            col.parts
                .iter()
                .filter(|p| p.1 > 0)
                .map(|(series, n)| {
                    let h = f64::from(*n) * scale;
                    top -= h;
                    (format!("s-{series}"), top, h)
                })
                .collect()
        })
        .collect();
    html! {
        svg class="chart" viewBox=(format!("0 0 {width} {height}")) preserveAspectRatio="none"
            role="img" aria-label=(label) xmlns="http://www.w3.org/2000/svg" {
            line class="axis" x1="0" y1=(height) x2=(width) y2=(height) {}
            @for (i, (col, parts)) in columns.iter().zip(&stacks).enumerate() {
                @let x = i as u32 * SLOT;
                g {
                    title { (col.title) }
                    // An invisible full-height target, so that the tooltip shows over short bars too.
                    rect class="hit" x=(x) y="0" width=(SLOT) height=(height) {}
                    @for (class, top, h) in parts {
                        rect class=(class) x=(x + 1) y=(format!("{top:.2}")) width=(SLOT - 2) height=(format!("{h:.2}")) {}
                    }
                }
            }
        }
    }
}

/// One probe run in a strip.
pub(super) struct Mark {
    pub title: String,
    pub ok: bool,
}

/// The strip of a probe's recent runs, oldest left; `slots` fixes its width so that strips line
/// up.
pub(super) fn strip(marks: &[Mark], slots: usize, label: &str) -> Markup {
    let width = 8 * slots.max(marks.len()).max(1);
    let offset = 8 * slots.saturating_sub(marks.len());
    html! {
        svg class="strip" viewBox=(format!("0 0 {width} 16")) role="img" aria-label=(label)
            xmlns="http://www.w3.org/2000/svg" {
            @for (i, m) in marks.iter().enumerate() {
                rect class=(if m.ok { "run ok" } else { "run fail" }) x=(offset + i * 8 + 1) y="1" width="6" height="14" rx="1" {
                    title { (m.title) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_tallest_and_carry_their_tooltips() {
        let cols = vec![
            Column { title: "a <b>".into(), parts: vec![("success", 3), ("error", 1)] },
            Column { title: "empty".into(), parts: vec![("success", 0)] },
            Column { title: "half".into(), parts: vec![("success", 2)] },
        ];
        let svg = stacked(&cols, 100, "traffic").into_string();
        assert!(svg.contains("viewBox=\"0 0 30 100\""), "{svg}");
        assert!(svg.contains("<title>a &lt;b&gt;</title>"), "tooltips are escaped: {svg}");
        assert!(svg.contains("class=\"s-success\" x=\"1\" y=\"25.00\" width=\"8\" height=\"75.00\""), "{svg}");
        assert!(svg.contains("class=\"s-error\" x=\"1\" y=\"0.00\" width=\"8\" height=\"25.00\""), "{svg}");
        assert!(svg.contains("class=\"s-success\" x=\"21\" y=\"50.00\""), "{svg}");
        assert!(!svg.contains("style="), "no style attributes under the CSP");
    }

    #[test]
    fn a_strip_is_right_aligned_in_its_slots() {
        let svg = strip(&[Mark { title: "ok".into(), ok: true }, Mark { title: "x".into(), ok: false }], 4, "runs")
            .into_string();
        assert!(svg.contains("viewBox=\"0 0 32 16\""));
        assert!(svg.contains("class=\"run ok\" x=\"17\""), "{svg}");
        assert!(svg.contains("class=\"run fail\" x=\"25\""), "{svg}");
    }
}
