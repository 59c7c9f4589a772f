//! Reading the proxies' `/metrics` (OpenMetrics text): the request counters and the
//! latency histogram buckets, which is all `trellis stat` needs. Other families are
//! skipped without being stored.

use std::collections::BTreeMap;

/// One series: its metric name and labels, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The families kept.
pub const REQUESTS: &str = "trellis_requests_total";
pub const DURATION_BUCKETS: &str = "trellis_request_duration_seconds_bucket";

/// The samples of the kept families in `text`; lines it cannot read are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| line.starts_with(REQUESTS) || line.starts_with(DURATION_BUCKETS))
        .filter_map(sample)
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(brace) => (&line[..brace], &line[brace..]),
        None => line.split_once(' ')?,
    };
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (BTreeMap::new(), rest),
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Labels up to the closing brace, and what follows it.
fn labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
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
        labels.insert(key.to_owned(), value);
        text = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_request_series_and_skips_the_rest() {
        let text = r#"# HELP trellis_requests HTTP requests
# TYPE trellis_requests counter
trellis_requests_total{listener="inbound",route="0",backend="app",status="200",class="2xx",error=""} 42
trellis_requests_total{listener="in\"bound",route="0",backend="a\\pp",status="503",class="5xx",error="no endpoints"} 3
trellis_request_duration_seconds_bucket{listener="inbound",route="0",backend="app",le="0.005"} 40
trellis_request_duration_seconds_bucket{listener="inbound",route="0",backend="app",le="+Inf"} 45
trellis_request_duration_seconds_sum{listener="inbound",route="0",backend="app"} 0.1
trellis_connections_total{listener="inbound",protocol="http1"} 7
garbage{ 1
# EOF
"#;
        let samples = samples(text);
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].value, 42.0);
        assert_eq!(samples[0].labels["status"], "200");
        assert_eq!(samples[1].labels["listener"], "in\"bound");
        assert_eq!(samples[1].labels["backend"], "a\\pp");
        assert_eq!(samples[1].labels["error"], "no endpoints");
        assert_eq!(samples[3].labels["le"], "+Inf");
        assert_eq!(samples[3].value, 45.0);
    }
}
