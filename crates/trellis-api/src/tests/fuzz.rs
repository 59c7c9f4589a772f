//! Random input never panics, and every error is one line.

use super::EXAMPLES;
use crate::parse_documents;

const ITERATIONS: usize = 3000;

fn check(text: &str) {
    if let Err(e) = parse_documents(text) {
        assert!(!e.to_string().contains('\n'), "{e} from {text:?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..ITERATIONS {
        let len = rng.usize(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn yaml_token_soup_never_panics() {
    const TOKENS: &[&str] = &[
        "\n",
        "  ",
        "- ",
        ": ",
        "---\n",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "!!str ",
        "\"",
        "'",
        "|\n",
        ">\n",
        "#",
        "? ",
        "~",
        "null",
        "1e9999",
        "-1",
        "99999999999999999999",
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "status",
        "name",
        "HTTPRoute",
        "Service",
        "gateway.networking.k8s.io/v1",
        "trellis.dev/v1alpha1",
        "rules",
        "matches",
        "path",
        "type",
        "value",
        "backendRefs",
        "weight",
        "filters",
        "parentRefs",
        "items",
        "\t",
    ];
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..ITERATIONS {
        let text: String = (0..rng.usize(0..60))
            .map(|_| TOKENS[rng.usize(..TOKENS.len())])
            .collect();
        check(&text);
    }
}

#[test]
fn mutated_examples_never_panic() {
    let mut rng = fastrand::Rng::with_seed(13);
    // Fewer rounds: each valid-looking document compiles its regular expressions.
    for i in 0..ITERATIONS / 4 {
        let (_, text) = EXAMPLES[i % EXAMPLES.len()];
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..rng.usize(1..6) {
            let at = rng.usize(..chars.len());
            match rng.u8(..3) {
                0 => {
                    chars.remove(at);
                }
                1 => {
                    let c = rng.choice([' ', '\n', ':', '-', '"', '0', 'x', '{']);
                    chars.insert(at, c.unwrap_or(' '));
                }
                _ => {
                    let other = rng.usize(..chars.len());
                    chars.swap(at, other);
                }
            }
        }
        check(&chars.into_iter().collect::<String>());
    }
}

#[test]
fn hostile_yaml_is_refused_within_budget() {
    let n = 10_000;
    let aliases = "a: &a [x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n\
                   d: &d [*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d]\n\
                   f: &f [*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n";
    let cases = [
        format!("{}{}", "[".repeat(n), "]".repeat(n)),
        "- ".repeat(n),
        "{a: ".repeat(n),
        aliases.to_string(),
    ];
    for text in cases {
        let err = parse_documents(&text).expect_err("hostile input");
        assert!(err.message.starts_with("invalid YAML: "), "{err}");
    }
}
