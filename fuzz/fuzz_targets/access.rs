//! The channels-claim pattern matcher against a slow, obviously correct one (dynamic
//! programming over pattern × topic), on arbitrary patterns and topics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::access::matches;

fn oracle(p: &[u8], t: &[u8]) -> bool {
    // ok[i][j]: p[..i] matches t[..j].
    let mut ok = vec![vec![false; t.len() + 1]; p.len() + 1];
    ok[0][0] = true;
    for i in 1..=p.len() {
        for j in 0..=t.len() {
            ok[i][j] = if p[i - 1] == b'*' {
                ok[i - 1][j] || (j > 0 && ok[i][j - 1])
            } else {
                j > 0 && ok[i - 1][j - 1] && p[i - 1] == t[j - 1]
            };
        }
    }
    ok[p.len()][t.len()]
}

fuzz_target!(|input: (&str, &str)| {
    let (p, t) = input;
    if p.len() > 64 || t.len() > 256 {
        return;
    }
    assert_eq!(
        matches(p, t),
        oracle(p.as_bytes(), t.as_bytes()),
        "{p:?} vs {t:?}"
    );
});
