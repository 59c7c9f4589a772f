//! The topology: services as boxes, the calls between them as arrows labelled with
//! requests per second and success rate, drawn dashed red when not over mTLS.
//!
//! The layout is layered by call depth: a service nobody calls is in the first column,
//! a service is one column right of its deepest caller (cycles are cut where a
//! depth-first walk finds them), and each column is ordered by where its callers are,
//! which keeps most arrows short and uncrossed. A mesh of 50 services reads as a few
//! columns of boxes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use crate::access::Reader;
use crate::html::{attr_url, error_page, esc, html_response, layout, percent, rps, Section};
use crate::overview::{Health, MeshView};
use crate::Dashboard;

const COLUMN: f64 = 360.0;
const ROW: f64 = 54.0;
const BOX_W: f64 = 170.0;
const BOX_H: f64 = 32.0;
const MARGIN: f64 = 24.0;
/// The node of calls made without an identity (plaintext callers).
const UNKNOWN: &str = "(no identity)";

/// A service in the graph: `namespace/name`, or [`UNKNOWN`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub namespace: String,
    pub name: String,
}

/// The calls from one service to another, over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub from: Node,
    pub to: Node,
    pub requests_per_second: f64,
    pub success_rate: Option<f64>,
    /// Every call was over mTLS.
    pub mtls: bool,
}

/// The graph: every node, with its health class, and the links.
#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: BTreeMap<Node, &'static str>,
    pub links: Vec<Link>,
}

impl Graph {
    fn from_view(view: &MeshView) -> Graph {
        let mut graph = Graph::default();
        for s in view.summaries() {
            let class = match s.health {
                Health::Healthy => "ok",
                Health::Degraded => "warn",
                Health::Failing => "bad",
                Health::NoWorkloads => "muted",
            };
            graph.nodes.insert(
                Node {
                    namespace: s.namespace,
                    name: s.name,
                },
                class,
            );
        }
        // (from, to) → (rps, requests, failures, all mTLS)
        let mut links: BTreeMap<(Node, Node), (f64, f64, f64, bool)> = BTreeMap::new();
        for e in &view.edges {
            let from = match e.source_service() {
                Some((namespace, name)) => Node {
                    namespace: namespace.into(),
                    name: name.into(),
                },
                None => Node {
                    namespace: String::new(),
                    name: UNKNOWN.into(),
                },
            };
            let to = Node {
                namespace: e.namespace.clone(),
                name: e.destination.clone(),
            };
            graph.nodes.entry(from.clone()).or_insert("muted");
            graph.nodes.entry(to.clone()).or_insert("muted");
            let entry = links.entry((from, to)).or_insert((0.0, 0.0, 0.0, true));
            entry.0 += e.requests_per_second;
            entry.1 += e.requests;
            entry.2 += e.requests * (1.0 - e.success_rate.unwrap_or(1.0));
            entry.3 &= e.mtls;
        }
        graph.links = links
            .into_iter()
            .map(|((from, to), (rps, requests, failures, mtls))| Link {
                from,
                to,
                requests_per_second: rps,
                success_rate: (requests > 0.0).then(|| 1.0 - failures / requests),
                mtls,
            })
            .collect();
        graph
    }

    /// Each node's column: its call depth, with cycles cut.
    fn depths(&self) -> BTreeMap<&Node, usize> {
        let index: BTreeMap<&Node, usize> =
            self.nodes.keys().enumerate().map(|(i, n)| (n, i)).collect();
        let mut callees: Vec<Vec<usize>> = vec![Vec::new(); index.len()];
        let mut called = vec![false; index.len()];
        for l in &self.links {
            let (a, b) = (index[&l.from], index[&l.to]);
            if a != b {
                callees[a].push(b);
                called[b] = true;
            }
        }
        // A depth-first walk from the roots (then from whatever a cycle left unvisited)
        // gives a finishing order; links that go back up the walk are the cycle's cut.
        let mut state = vec![0u8; index.len()]; // 0 new, 1 on the walk, 2 done
        let mut finished = Vec::with_capacity(index.len());
        let mut kept: Vec<Vec<usize>> = vec![Vec::new(); index.len()];
        let starts: Vec<usize> = (0..index.len())
            .filter(|&i| !called[i])
            .chain(0..index.len())
            .collect();
        for start in starts {
            if state[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            state[start] = 1;
            while let Some((node, next)) = stack.pop() {
                if let Some(&callee) = callees[node].get(next) {
                    stack.push((node, next + 1));
                    match state[callee] {
                        0 => {
                            kept[node].push(callee);
                            state[callee] = 1;
                            stack.push((callee, 0));
                        }
                        2 => kept[node].push(callee),
                        _ => {} // back to the walk: a cycle, cut here
                    }
                } else {
                    state[node] = 2;
                    finished.push(node);
                }
            }
        }
        let mut depth = vec![0usize; index.len()];
        for &node in finished.iter().rev() {
            for &callee in &kept[node] {
                depth[callee] = depth[callee].max(depth[node] + 1);
            }
        }
        index.into_iter().map(|(n, i)| (n, depth[i])).collect()
    }

    /// Each node's box: its top-left corner.
    pub fn layout(&self) -> BTreeMap<&Node, (f64, f64)> {
        let depths = self.depths();
        let columns = depths.values().copied().max().map_or(0, |d| d + 1);
        let mut placed: BTreeMap<&Node, (f64, f64)> = BTreeMap::new();
        for column in 0..columns {
            let mut members: Vec<(&Node, f64)> = depths
                .iter()
                .filter(|(_, d)| **d == column)
                .map(|(n, _)| {
                    // Where its callers already are; a root keeps its name order.
                    let ys: Vec<f64> = self
                        .links
                        .iter()
                        .filter(|l| &l.to == *n)
                        .filter_map(|l| placed.get(&l.from).map(|p| p.1))
                        .collect();
                    let y = if ys.is_empty() {
                        f64::MAX
                    } else {
                        ys.iter().sum::<f64>() / ys.len() as f64
                    };
                    (*n, y)
                })
                .collect();
            members.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
            for (row, (node, _)) in members.into_iter().enumerate() {
                placed.insert(
                    node,
                    (MARGIN + COLUMN * column as f64, MARGIN + ROW * row as f64),
                );
            }
        }
        placed
    }

    /// The graph as an SVG.
    pub fn svg(&self) -> String {
        let places = self.layout();
        let width = places.values().map(|p| p.0).fold(0.0, f64::max) + BOX_W + 2.0 * MARGIN;
        let height = places.values().map(|p| p.1).fold(0.0, f64::max) + BOX_H + 2.0 * MARGIN;
        let mut svg = format!(
            "<svg class=\"topology\" id=\"topology-graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"Service topology\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
<path d=\"M0,0 L10,5 L0,10 z\" class=\"arrowhead\"/></marker>\
<marker id=\"arrow-plain\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
<path d=\"M0,0 L10,5 L0,10 z\" class=\"arrowhead plain\"/></marker></defs>"
        );
        let mut labels = String::new();
        let mut taken = Labels::default();
        for l in &self.links {
            let (Some(a), Some(b)) = (places.get(&l.from), places.get(&l.to)) else {
                continue;
            };
            let (x1, y1) = (a.0 + BOX_W, a.1 + BOX_H / 2.0);
            let (x2, y2) = (b.0, b.1 + BOX_H / 2.0);
            // Forward links curve right; links back or within a column loop out wide.
            let bend = ((x2 - x1).abs() / 2.0).max(60.0);
            let (c1, c2) = (x1 + bend, x2 - bend);
            let class = if l.mtls { "edge" } else { "edge plain" };
            let marker = if l.mtls { "arrow" } else { "arrow-plain" };
            let _ = write!(
                svg,
                "<path class=\"{class}\" data-from=\"{}\" data-to=\"{}\" d=\"M{x1:.1},{y1:.1} C{c1:.1},{y1:.1} {c2:.1},{y2:.1} {x2:.1},{y2:.1}\" marker-end=\"url(#{marker})\"/>",
                esc(&l.from.name),
                esc(&l.to.name),
            );
            let mut text = format!(
                "{} rps · {}",
                rps(l.requests_per_second),
                percent(l.success_rate)
            );
            if !l.mtls {
                text.push_str(" · not mTLS");
            }
            let curve = [(x1, y1), (c1, y1), (c2, y2), (x2, y2)];
            let (mx, my) = taken.place(&curve, &text);
            let _ = write!(
                labels,
                "<text class=\"edge-label{}\" x=\"{mx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" data-edge=\"{}→{}\">{}</text>",
                if l.mtls { "" } else { " plain" },
                // Just above its arrow, which would cross the text.
                my - 5.0,
                esc(&l.from.name),
                esc(&l.to.name),
                esc(&text)
            );
        }
        for (node, class) in &self.nodes {
            let Some((x, y)) = places.get(node) else {
                continue;
            };
            let rect = format!(
                "<rect class=\"node {class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\"/>\
<text class=\"node-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + BOX_W / 2.0,
                y + BOX_H / 2.0 + 5.0,
                esc(&node.name)
            );
            if node.name == UNKNOWN {
                let _ = write!(
                    svg,
                    "<g class=\"service\" data-service=\"{}\">{rect}</g>",
                    esc(&node.name)
                );
            } else {
                let _ = write!(
                    svg,
                    "<a href=\"/dashboard/services/{}/{}\"><g class=\"service\" data-service=\"{}\"><title>{}/{}</title>{rect}</g></a>",
                    attr_url(&node.namespace),
                    attr_url(&node.name),
                    esc(&node.name),
                    esc(&node.namespace),
                    esc(&node.name)
                );
            }
        }
        svg.push_str(&labels);
        svg.push_str("</svg>");
        svg
    }
}

/// Where the edge labels already are, so the next one goes where it can be read.
#[derive(Default)]
struct Labels {
    /// Centre, half width, half height of each placed label.
    placed: Vec<(f64, f64, f64, f64)>,
}

impl Labels {
    /// Where along its curve (a cubic Bézier) the label `text` sits: the middle if
    /// free, else the free point nearest the middle, else the middle all the same.
    fn place(&mut self, curve: &[(f64, f64); 4], text: &str) -> (f64, f64) {
        // About the width of the labels' 11px font.
        let half_w = text.chars().count() as f64 * 3.2 + 2.0;
        let half_h = 7.0;
        let at = |t: f64| {
            let u = 1.0 - t;
            let w = [u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t];
            curve
                .iter()
                .zip(w)
                .fold((0.0, 0.0), |(x, y), ((px, py), w)| (x + px * w, y + py * w))
        };
        let free = |(x, y): (f64, f64)| {
            self.placed.iter().all(|(px, py, pw, ph)| {
                (x - px).abs() >= half_w + pw || (y - py).abs() >= half_h + ph
            })
        };
        let spot = [0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8]
            .into_iter()
            .map(at)
            .find(|p| free(*p))
            .unwrap_or_else(|| at(0.5));
        self.placed.push((spot.0, spot.1, half_w, half_h));
        spot
    }
}

/// The graph and its legend.
fn render(view: &MeshView) -> String {
    let graph = Graph::from_view(view);
    if graph.nodes.is_empty() {
        return "<p class=\"muted\">No services yet.</p>".to_owned();
    }
    // The caller without an identity is no namespace.
    let namespaces: BTreeSet<&str> = graph
        .nodes
        .keys()
        .map(|n| n.namespace.as_str())
        .filter(|ns| !ns.is_empty())
        .collect();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!(
        "<p class=\"legend-line\">{} in {}, {} over the last {} · \
<span class=\"key-edge\">mTLS</span> <span class=\"key-edge plain\">not mTLS</span></p><div class=\"graph\">{}</div>",
        plural(graph.nodes.len(), "service"),
        plural(namespaces.len(), "namespace"),
        plural(graph.links.len(), "calling pair"),
        crate::api::WINDOW,
        graph.svg()
    )
}

/// `GET /dashboard/topology`
pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
) -> Response {
    match MeshView::read(&dashboard, &viewer).await {
        Ok(view) => layout(
            Section::Topology,
            "Topology",
            viewer.signed_in(),
            &format!(
                "<div data-live=\"/dashboard/fragments/topology\" data-every=\"10\">{}</div>",
                render(&view)
            ),
        ),
        Err(e) => error_page(Section::Topology, viewer.signed_in(), &e),
    }
}

/// `GET /dashboard/fragments/topology`
pub(crate) async fn fragment(
    State(dashboard): State<Arc<Dashboard>>,
    Reader(viewer): Reader,
) -> Response {
    match MeshView::read(&dashboard, &viewer).await {
        Ok(view) => html_response(StatusCode::OK, render(&view)),
        Err(e) => html_response(
            StatusCode::BAD_GATEWAY,
            format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        Node {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn link(from: &str, to: &str) -> Link {
        Link {
            from: node(from),
            to: node(to),
            requests_per_second: 1.0,
            success_rate: Some(1.0),
            mtls: true,
        }
    }

    fn graph(names: &[&str], links: &[(&str, &str)]) -> Graph {
        Graph {
            nodes: names.iter().map(|n| (node(n), "ok")).collect(),
            links: links.iter().map(|(a, b)| link(a, b)).collect(),
        }
    }

    #[test]
    fn columns_follow_call_depth_and_cut_cycles() {
        let g = graph(
            &["books", "loadgen", "ratings", "web"],
            &[
                ("loadgen", "web"),
                ("web", "books"),
                ("books", "ratings"),
                ("ratings", "books"),
                ("loadgen", "books"),
            ],
        );
        let depths: BTreeMap<String, usize> = g
            .depths()
            .into_iter()
            .map(|(n, d)| (n.name.clone(), d))
            .collect();
        assert_eq!(depths["loadgen"], 0);
        assert_eq!(depths["web"], 1);
        assert_eq!(depths["books"], 2);
        assert_eq!(depths["ratings"], 3);
    }

    /// A shop of 50 services: a gateway, six front ends, fifteen APIs (one front end
    /// each) and 28 stores (two APIs each), a few calls in plaintext. The picture of
    /// 50 services in docs/dashboard.md is this mesh.
    fn fifty_services() -> Graph {
        let mut names = vec!["gateway".to_owned()];
        names.extend((0..6).map(|i| format!("frontend-{i}")));
        names.extend((0..15).map(|i| format!("api-{i:02}")));
        names.extend((0..28).map(|i| format!("store-{i:02}")));
        let mut pairs = Vec::new();
        for i in 0..6 {
            pairs.push(("gateway".to_owned(), format!("frontend-{i}")));
        }
        for i in 0..15 {
            pairs.push((format!("frontend-{}", i % 6), format!("api-{i:02}")));
            for j in 0..2 {
                pairs.push((
                    format!("api-{i:02}"),
                    format!("store-{:02}", (i * 2 + j) % 28),
                ));
            }
        }
        Graph {
            nodes: names.iter().map(|n| (node(n), "ok")).collect(),
            links: pairs
                .iter()
                .enumerate()
                .map(|(k, (a, b))| Link {
                    requests_per_second: 3.0 + (k % 7) as f64 * 4.1,
                    success_rate: Some(if k % 11 == 0 { 0.962 } else { 1.0 }),
                    mtls: k % 17 != 5,
                    ..link(a, b)
                })
                .collect(),
        }
    }

    #[test]
    fn fifty_services_fit_in_few_columns_without_overlap() {
        let g = fifty_services();
        let places = g.layout();
        assert_eq!(places.len(), 50);
        let corners: BTreeSet<(i64, i64)> = places
            .values()
            .map(|(x, y)| (*x as i64, *y as i64))
            .collect();
        assert_eq!(corners.len(), 50, "no two boxes in one place");
        let columns: BTreeSet<i64> = corners.iter().map(|c| c.0).collect();
        assert_eq!(columns.len(), 4, "gateway, front ends, APIs, stores");
        let svg = g.svg();
        assert_eq!(svg.matches("<path class=\"edge").count(), g.links.len());
        assert_eq!(svg.matches("class=\"edge-label").count(), g.links.len());
        assert_eq!(svg.matches("not mTLS").count(), 3);
        assert!(svg.contains(">store-27<"));
    }

    #[test]
    fn plaintext_calls_are_marked() {
        let mut g = graph(&["a", "b"], &[("a", "b")]);
        g.links[0].mtls = false;
        let svg = g.svg();
        assert!(svg.contains("class=\"edge plain\""));
        assert!(svg.contains("not mTLS"));
    }
}
