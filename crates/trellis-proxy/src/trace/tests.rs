use http::{HeaderMap, HeaderValue};

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).expect("value"));
    }
    map
}

/// A deterministic source of "random" numbers.
fn counter() -> impl FnMut() -> u64 {
    let mut n = 0x1000u64;
    move || {
        n += 1;
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[test]
fn reads_each_format_and_refuses_malformed_ones() {
    let w3c = extract(&headers(&[
        ("traceparent", &format!("00-{TRACE}-{PARENT}-01")),
        ("tracestate", "vendor=x"),
    ]))
    .expect("w3c");
    assert_eq!(w3c.format, Format::W3c);
    assert_eq!(hex_string(&w3c.trace_id), TRACE);
    assert_eq!(w3c.span_id.map(|s| hex_string(&s)).as_deref(), Some(PARENT));
    assert_eq!(w3c.sampled, Some(true));

    let multi = extract(&headers(&[
        ("x-b3-traceid", &TRACE[16..]),
        ("x-b3-spanid", PARENT),
        ("x-b3-sampled", "0"),
    ]))
    .expect("b3 multi");
    assert_eq!(multi.format, Format::B3Multi);
    assert_eq!(
        &hex_string(&multi.trace_id)[16..],
        &TRACE[16..],
        "64-bit ids widen"
    );
    assert_eq!(multi.sampled, Some(false));

    let single = extract(&headers(&[("b3", &format!("{TRACE}-{PARENT}-1"))])).expect("b3");
    assert_eq!(
        (single.format, single.sampled),
        (Format::B3Single, Some(true))
    );
    let decision = extract(&headers(&[("b3", "0")])).expect("a decision alone");
    assert_eq!((decision.span_id, decision.sampled), (None, Some(false)));

    for bad in [
        format!("00-{TRACE}-{PARENT}"),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
        format!("00-{TRACE}-{PARENT}-01-extra"),
    ] {
        assert!(
            extract(&headers(&[("traceparent", &bad)])).is_none(),
            "{bad}"
        );
    }
    assert!(extract(&headers(&[("b3", "nonsense")])).is_none());
    assert!(extract(&HeaderMap::new()).is_none());
}

#[test]
fn three_hops_make_a_chain_of_parent_and_child() {
    let mut random = counter();
    // The first proxy sees no context: a new trace, sampled at rate 1.
    let first = start(None, 1.0, &mut random);
    assert!(first.sampled && first.parent_id.is_none());
    let mut wire = HeaderMap::new();
    first.inject(&mut wire);
    // Each next hop is a child of the one before, in the same trace.
    let second = start(extract(&wire).as_ref(), 0.0, &mut random);
    second.inject(&mut wire);
    let third = start(extract(&wire).as_ref(), 0.0, &mut random);
    assert_eq!(second.trace_id, first.trace_id);
    assert_eq!(third.trace_id, first.trace_id);
    assert_eq!(second.parent_id, Some(first.span_id));
    assert_eq!(third.parent_id, Some(second.span_id));
    assert_ne!(second.span_id, third.span_id);
    // The caller's decision holds, whatever this proxy's own rate.
    assert!(second.sampled && third.sampled);
}

#[test]
fn b3_stays_b3_and_tracestate_passes_through() {
    let mut random = counter();
    let incoming = headers(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-sampled", "1"),
    ]);
    let span = start(extract(&incoming).as_ref(), 0.0, &mut random);
    let mut out = incoming.clone();
    span.inject(&mut out);
    assert_eq!(out["x-b3-traceid"], TRACE);
    assert_eq!(out["x-b3-parentspanid"], PARENT);
    assert_eq!(out["x-b3-spanid"], hex_string(&span.span_id).as_str());
    assert!(out.get("traceparent").is_none());

    let w3c = headers(&[
        ("traceparent", &format!("00-{TRACE}-{PARENT}-00")),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    let span = start(extract(&w3c).as_ref(), 1.0, &mut random);
    assert!(!span.sampled, "the caller said not sampled");
    let mut out = HeaderMap::new();
    span.inject(&mut out);
    let expected = format!("00-{TRACE}-{}-00", hex_string(&span.span_id));
    assert_eq!(out["traceparent"], expected.as_str());
    assert_eq!(out["tracestate"], "congo=t61rcWkgMzE");

    // A new trace, sampled: every digit of both ids, and the flag.
    let span = start(None, 1.0, &mut random);
    let mut out = HeaderMap::new();
    span.inject(&mut out);
    let expected = format!(
        "00-{}-{}-01",
        hex_string(&span.trace_id),
        hex_string(&span.span_id)
    );
    assert_eq!(out["traceparent"], expected.as_str());
}

#[test]
fn new_traces_are_sampled_at_the_rate() {
    let mut random = counter();
    let sampled = (0..10_000)
        .filter(|_| start(None, 0.01, &mut random).sampled)
        .count();
    assert!((50..=200).contains(&sampled), "{sampled} of 10000 at 1 %");
    assert!(!start(None, 0.0, &mut random).sampled);
    // A lone "do not sample" decision starts a trace that keeps it.
    let decision = extract(&headers(&[("b3", "0")])).expect("decision");
    assert!(!start(Some(&decision), 1.0, &mut random).sampled);
}
