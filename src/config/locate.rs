//! Finds the line of a config path (`probes[1].expect.status`) in block-style YAML text, so that
//! problems found after parsing still point at a line. Best effort: for flow style (`{a: 1}`)
//! it returns the line of the deepest key it could follow.

/// One step of a config path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Renders a path the way users write it: `probes[1].expect.status`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A logical line: `- name: x` becomes a `-` entry and a `name: x` entry two columns in.
struct Entry<'a> {
    line: usize,
    indent: usize,
    text: &'a str,
}

fn entries(src: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut text = trimmed;
        while let Some(rest) = text.strip_prefix('-').filter(|r| r.is_empty() || r.starts_with(' ')) {
            out.push(Entry { line: i + 1, indent, text: "-" });
            let inner = rest.trim_start();
            indent += 1 + (rest.len() - inner.len());
            text = inner;
        }
        if !text.is_empty() {
            out.push(Entry { line: i + 1, indent, text });
        }
    }
    out
}

fn is_key(text: &str, key: &str) -> bool {
    fn unquoted<'a>(t: &'a str, key: &str, q: char) -> Option<&'a str> {
        t.strip_prefix(q)?.strip_prefix(key)?.strip_prefix(q)
    }
    let rest = unquoted(text, key, '"').or_else(|| unquoted(text, key, '\'')).or_else(|| text.strip_prefix(key));
    rest.is_some_and(|r| r.trim_start().starts_with(':'))
}

/// The 1-based line of `path`, or of its deepest prefix found.
pub fn line_of(src: &str, path: &[Seg]) -> Option<usize> {
    let all = entries(src);
    let (mut start, mut end) = (0, all.len());
    let mut best = None;
    for seg in path {
        let Some(level) = all[start..end].iter().map(|e| e.indent).min() else { break };
        let mut at_level = (start..end).filter(|&i| all[i].indent == level);
        let found = match seg {
            Seg::Key(k) => at_level.find(|&i| is_key(all[i].text, k)),
            Seg::Index(n) => at_level.filter(|&i| all[i].text == "-").nth(*n),
        };
        let Some(found) = found else { break };
        best = Some(all[found].line);
        // The block of `found` is what follows it, deeper than it; YAML also lets a key's
        // sequence sit at the key's own indent (`probes:` then `- name: a` in column 0).
        let me = all[found].indent;
        let seq_at_same_indent =
            matches!(seg, Seg::Key(_)) && all.get(found + 1).is_some_and(|e| e.indent == me && e.text == "-");
        let mut stop = found + 1;
        while stop < end
            && (all[stop].indent > me || (seq_at_same_indent && all[stop].text == "-" && all[stop].indent == me))
        {
            stop += 1;
        }
        (start, end) = (found + 1, stop);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Seg> {
        s.split('.')
            .flat_map(|part| {
                let mut segs = Vec::new();
                let (key, idx) = part.split_once('[').map(|(k, i)| (k, Some(i))).unwrap_or((part, None));
                if !key.is_empty() {
                    segs.push(Seg::Key(key.to_owned()));
                }
                if let Some(i) = idx {
                    segs.push(Seg::Index(i.trim_end_matches(']').parse().unwrap()));
                }
                segs
            })
            .collect()
    }

    const DOC: &str = "\
# comment
upstream:
  base_url: http://x
  timeout: 5s
probes:
  - name: a
    interval: 60s
    request:
      path: /a
  - name: b
    expect:
      status: ok
      http_status: [400]
labels: { models: [flux] }
probes_flat:
- name: c
- name: d
  interval: 1s
";

    #[test]
    fn finds_block_style_paths() {
        assert_eq!(render(&p("probes[1].expect.status")), "probes[1].expect.status");
        assert_eq!(line_of(DOC, &p("upstream")), Some(2));
        assert_eq!(line_of(DOC, &p("upstream.timeout")), Some(4));
        assert_eq!(line_of(DOC, &p("probes[0]")), Some(6));
        assert_eq!(line_of(DOC, &p("probes[0].name")), Some(6));
        assert_eq!(line_of(DOC, &p("probes[0].request.path")), Some(9));
        assert_eq!(line_of(DOC, &p("probes[1].name")), Some(10));
        assert_eq!(line_of(DOC, &p("probes[1].expect.status")), Some(12));
        assert_eq!(line_of(DOC, &p("probes[1].expect.http_status[0]")), Some(13));
        assert_eq!(line_of(DOC, &p("labels.models")), Some(14));
        assert_eq!(line_of(DOC, &p("probes_flat[1].interval")), Some(18));
        assert_eq!(line_of(DOC, &p("probes[5]")), Some(5));
        assert_eq!(line_of(DOC, &p("nothing")), None);
    }
}
