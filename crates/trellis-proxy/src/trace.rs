//! Trace context across hops: W3C Trace Context (`traceparent`, `tracestate`) and B3
//! (the `x-b3-*` headers, or the single `b3` header). Each proxy a request passes
//! through is one span: it keeps the incoming trace id, takes the incoming span as its
//! parent, makes a span id of its own, and hands that on as the parent of the next hop,
//! in the format the request came with (W3C when it came with none). A request with no
//! context starts a trace, sampled at the configured rate; one with a sampling decision
//! keeps it, so a trace is recorded whole or not at all.
//!
//! The application only has to copy these headers from the request it serves to the
//! requests it makes.

pub mod otlp;
pub mod tracer;

use http::{HeaderMap, HeaderName, HeaderValue};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Which headers carried the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Multi,
    B3Single,
}

/// The context a request arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub format: Format,
    /// All zero when a B3 header carried a sampling decision alone.
    pub trace_id: [u8; 16],
    /// The caller's span: this hop's parent. B3 allows a sampling decision alone.
    pub span_id: Option<[u8; 8]>,
    pub sampled: Option<bool>,
    /// W3C `tracestate`, passed on unchanged.
    pub tracestate: Option<HeaderValue>,
}

/// This hop's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
    format: Format,
    tracestate: Option<HeaderValue>,
}

/// The context in `headers`, if any is well-formed (W3C first, then B3).
pub fn extract(headers: &HeaderMap) -> Option<Incoming> {
    // One pass over the headers finds every trace header: most requests carry none,
    // and a lookup per name would hash each of them.
    let mut found: [Option<&HeaderValue>; CONTEXT_HEADERS] = [None; CONTEXT_HEADERS];
    for (name, value) in headers {
        if let Some(i) = context_header(name) {
            found[i].get_or_insert(value);
        }
    }
    let text = |name: &HeaderName| {
        let i = context_header(name)?;
        found[i].and_then(|v| v.to_str().ok())
    };
    if let Some(parent) = text(&TRACEPARENT).and_then(parse_traceparent) {
        let (trace_id, span_id, sampled) = parent;
        return Some(Incoming {
            format: Format::W3c,
            trace_id,
            span_id: Some(span_id),
            sampled: Some(sampled),
            tracestate: headers.get(&TRACESTATE).cloned(),
        });
    }
    if let Some(single) = text(&B3).and_then(parse_b3_single) {
        return Some(single);
    }
    let trace_id = text(&B3_TRACE_ID).and_then(trace_id)?;
    let span_id = text(&B3_SPAN_ID).and_then(|s| hex::<8>(s).filter(nonzero));
    let debug = text(&B3_FLAGS) == Some("1");
    let sampled = match text(&B3_SAMPLED) {
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        _ => debug.then_some(true),
    };
    Some(Incoming {
        format: Format::B3Multi,
        trace_id,
        span_id,
        sampled,
        tracestate: None,
    })
}

/// The headers that carry a caller's context, which this hop replaces with its own.
const CONTEXT: [HeaderName; CONTEXT_HEADERS] = [
    TRACEPARENT,
    B3,
    B3_TRACE_ID,
    B3_SPAN_ID,
    B3_PARENT,
    B3_SAMPLED,
    B3_FLAGS,
];
const CONTEXT_HEADERS: usize = 7;

/// Where `name` stands in [`CONTEXT`]. None of them is a standard header, so a standard
/// one is ruled out without comparing its text.
fn context_header(name: &HeaderName) -> Option<usize> {
    CONTEXT.iter().position(|context| context == name)
}

/// This hop's span: a child of `incoming`, or the root of a new trace sampled with
/// probability `sample_rate`. `random` gives fresh random bytes.
pub fn start(
    incoming: Option<&Incoming>,
    sample_rate: f64,
    random: &mut impl FnMut() -> u64,
) -> Span {
    let span_id = nonzero_id(random);
    match incoming {
        Some(parent) => Span {
            trace_id: if nonzero(&parent.trace_id) {
                parent.trace_id
            } else {
                new_trace_id(random)
            },
            span_id,
            parent_id: parent.span_id,
            sampled: parent
                .sampled
                .unwrap_or_else(|| sample(sample_rate, random)),
            format: parent.format,
            tracestate: parent.tracestate.clone(),
        },
        None => {
            let trace_id = new_trace_id(random);
            Span {
                trace_id,
                span_id,
                parent_id: None,
                sampled: sample(sample_rate, random),
                format: Format::W3c,
                tracestate: None,
            }
        }
    }
}

impl Span {
    /// Writes this span into `headers` as the parent of the next hop, in the format
    /// the request came with, replacing the incoming context.
    pub fn inject(&self, headers: &mut HeaderMap) {
        // Removing a name costs a hash even when it is absent, as it is on most
        // requests: look first, in one pass.
        if headers.keys().any(|name| context_header(name).is_some()) {
            for name in &CONTEXT {
                headers.remove(name);
            }
        }
        let sampled = if self.sampled { "1" } else { "0" };
        if self.format == Format::W3c {
            // The common case, on every traced request: the header is written in place,
            // without intermediate strings.
            headers.insert(&TRACEPARENT, self.traceparent());
            if let Some(state) = &self.tracestate {
                headers.insert(&TRACESTATE, state.clone());
            }
            return;
        }
        let trace = hex_string(&self.trace_id);
        let span = hex_string(&self.span_id);
        let put = |headers: &mut HeaderMap, name: &HeaderName, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        match self.format {
            Format::W3c => {}
            Format::B3Single => put(headers, &B3, format!("{trace}-{span}-{sampled}")),
            Format::B3Multi => {
                put(headers, &B3_TRACE_ID, trace);
                put(headers, &B3_SPAN_ID, span);
                put(headers, &B3_SAMPLED, sampled.to_owned());
                if let Some(parent) = &self.parent_id {
                    put(headers, &B3_PARENT, hex_string(parent));
                }
            }
        }
    }

    /// `00-{trace id}-{span id}-{flags}`, written on every traced request, so spelled
    /// into a buffer on the stack rather than pushed character by character.
    fn traceparent(&self) -> HeaderValue {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        trellis_identity::hex::encode_to_slice(&self.trace_id, &mut out[3..35]);
        trellis_identity::hex::encode_to_slice(&self.span_id, &mut out[36..52]);
        if self.sampled {
            out[54] = b'1';
        }
        // Hex digits and dashes are always a valid header value.
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("00-0-0-00"))
    }

    /// The trace id as 32 hex digits, for logs.
    pub fn trace_id_hex(&self) -> String {
        hex_string(&self.trace_id)
    }
}

/// `00-{trace}-{parent}-{flags}`: the ids, and whether the caller sampled.
fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    // Version ff is invalid; a later version is read as 00 (fields past four ignored).
    if version.len() != 2 || version == "ff" || hex::<1>(version).is_none() {
        return None;
    }
    let trace = hex::<16>(parts.next()?).filter(nonzero)?;
    let parent = hex::<8>(parts.next()?).filter(nonzero)?;
    let flags = hex::<1>(parts.next()?)?;
    if version == "00" && parts.next().is_some() {
        return None;
    }
    Some((trace, parent, flags[0] & 1 == 1))
}

/// `b3: {trace}-{span}[-{sampled}[-{parent}]]`, or a lone sampling decision.
fn parse_b3_single(value: &str) -> Option<Incoming> {
    let mut parts = value.trim().split('-');
    let first = parts.next()?;
    if value.trim().len() == 1 {
        // A decision without ids: a new trace that keeps it.
        let sampled = match first {
            "1" | "d" => true,
            "0" => false,
            _ => return None,
        };
        return Some(Incoming {
            format: Format::B3Single,
            trace_id: [0; 16],
            span_id: None,
            sampled: Some(sampled),
            tracestate: None,
        });
    }
    let trace_id = trace_id(first)?;
    let span_id = hex::<8>(parts.next()?).filter(nonzero)?;
    let sampled = match parts.next() {
        Some("1" | "d") => Some(true),
        Some("0") => Some(false),
        None => None,
        Some(_) => return None,
    };
    Some(Incoming {
        format: Format::B3Single,
        trace_id,
        span_id: Some(span_id),
        sampled,
        tracestate: None,
    })
}

/// A B3 trace id: 32 hex digits, or 16 (the high half zero).
fn trace_id(text: &str) -> Option<[u8; 16]> {
    match text.len() {
        32 => hex::<16>(text),
        16 => hex::<8>(text).map(|low| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }),
        _ => None,
    }
    .filter(nonzero)
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2
        || !text
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn nonzero<const N: usize>(id: &[u8; N]) -> bool {
    id.iter().any(|b| *b != 0)
}

fn nonzero_id(random: &mut impl FnMut() -> u64) -> [u8; 8] {
    loop {
        let id = random().to_be_bytes();
        if nonzero(&id) {
            return id;
        }
    }
}

fn new_trace_id(random: &mut impl FnMut() -> u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random().to_be_bytes());
    id[8..].copy_from_slice(&nonzero_id(random));
    id
}

fn sample(rate: f64, random: &mut impl FnMut() -> u64) -> bool {
    rate >= 1.0 || (rate > 0.0 && (random() as f64 / u64::MAX as f64) < rate)
}

fn hex_string(bytes: &[u8]) -> String {
    trellis_identity::hex::encode(bytes)
}

#[cfg(test)]
mod tests;
