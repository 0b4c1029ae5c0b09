//! A Prometheus text exposition, parsed once and queried by name and labels in any order:
//! `scrape.metric("modelslab_jobs_total").label("result", "success").value()`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition. `Display` gives the text back, for assertion messages.
#[derive(Debug, Clone)]
pub struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses the text format; panics on a line it cannot read (the agent must not serve one).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| parse_line(l).unwrap_or_else(|| panic!("not an exposition line: {l:?}")))
            .collect();
        Scrape { text: text.to_owned(), samples }
    }

    /// The series of the family `name` (histograms: `name_bucket`, `name_sum`, `name_count`).
    pub fn metric<'a>(&'a self, name: &'a str) -> Selection<'a> {
        Selection { scrape: self, name, labels: Vec::new() }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether any series of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

impl fmt::Display for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The series of one family whose labels include every `label(k, v)` given.
#[derive(Clone)]
pub struct Selection<'a> {
    scrape: &'a Scrape,
    name: &'a str,
    labels: Vec<(&'a str, &'a str)>,
}

impl<'a> Selection<'a> {
    /// Keeps the series with label `key` equal to `value`.
    pub fn label(mut self, key: &'a str, value: &'a str) -> Self {
        self.labels.push((key, value));
        self
    }

    fn matching(&self) -> impl Iterator<Item = &'a Sample> + '_ {
        self.scrape.samples.iter().filter(move |s| {
            s.name == self.name && self.labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of the matching series; `None` when no series matches.
    pub fn value(&self) -> Option<f64> {
        let mut any = false;
        let sum = self.matching().inspect(|_| any = true).map(|s| s.value).sum();
        any.then_some(sum)
    }

    /// The sum of the matching series, 0 when none matches.
    pub fn sum(&self) -> f64 {
        self.value().unwrap_or(0.0)
    }

    /// How many series match.
    pub fn count(&self) -> usize {
        self.matching().count()
    }

    /// The distinct values of `label` among the matching series whose value is not 0.
    pub fn nonzero_values_of(&self, label: &str) -> BTreeSet<String> {
        self.matching().filter(|s| s.value != 0.0).filter_map(|s| s.labels.get(label).cloned()).collect()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name_end, rest) = match line.find(['{', ' ']) {
        Some(i) => (i, &line[i..]),
        None => return None,
    };
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches([',', ' ']);
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim().to_owned();
            let mut chars = body[eq + 1..].strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.insert(key, value);
            body = &body[eq + 1..][end + 2..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

#[test]
fn parses_labels_in_any_order_and_escapes() {
    let s = Scrape::parse(
        "# HELP x y\nmodelslab_jobs_total{model=\"flux\",result=\"success\"} 2\nmodelslab_jobs_total{result=\"failed\",model=\"a\\\"b\"} 1\nplain 3.5\nh_bucket{le=\"+Inf\"} 4\n",
    );
    assert_eq!(s.metric("modelslab_jobs_total").label("result", "success").value(), Some(2.0));
    assert_eq!(s.metric("modelslab_jobs_total").value(), Some(3.0));
    assert_eq!(s.metric("modelslab_jobs_total").label("model", "a\"b").value(), Some(1.0));
    assert_eq!(s.metric("modelslab_jobs_total").label("result", "expired").value(), None);
    assert_eq!(s.metric("plain").value(), Some(3.5));
    assert_eq!(s.metric("h_bucket").label("le", "+Inf").value(), Some(4.0));
}
