//! Consistent hashing with a Maglev lookup table (Eisenbud et al., NSDI 2016): each
//! endpoint fills table slots in the order of its own permutation of the table, taking
//! turns, so every endpoint gets nearly the same share of slots, and adding or removing
//! one of N endpoints moves about 1/N of the keys.
//!
//! Endpoints are identified by name (their address), not by position, so the table
//! depends only on the set of endpoints.

/// Table size: a prime far larger than any backend's endpoint count, so shares stay
/// within a fraction of a percent of each other.
const TABLE_SIZE: u64 = 65_537;

/// A lookup table from key hash to endpoint index.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// The table for endpoints named `names`, in the order given (lookups return
    /// indices into it). Empty for no endpoints.
    pub fn new(names: &[String]) -> Self {
        if names.is_empty() {
            return Self { table: Vec::new() };
        }
        let size = TABLE_SIZE;
        // Turns are taken in name order, so the table depends only on the set of names.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|a, b| names[*a].cmp(&names[*b]));
        // Each endpoint's permutation: slot (offset + j * skip) mod size for its j-th turn.
        let perms: Vec<(u64, u64)> = order
            .iter()
            .map(|i| &names[*i])
            .map(|n| {
                let offset = fnv1a(n.as_bytes(), 0xcbf2_9ce4_8422_2325) % size;
                let skip = fnv1a(n.as_bytes(), 0x84222325_cbf29ce4) % (size - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; names.len()];
        let mut table = vec![u32::MAX; usize::try_from(size).unwrap_or(usize::MAX)];
        let mut filled = 0u64;
        'fill: loop {
            for (i, (offset, skip)) in perms.iter().enumerate() {
                let mut slot = (offset + next[i] * skip) % size;
                while table[slot as usize] != u32::MAX {
                    next[i] += 1;
                    slot = (offset + next[i] * skip) % size;
                }
                table[slot as usize] = u32::try_from(order[i]).unwrap_or(u32::MAX);
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Self { table }
    }

    /// The index of the endpoint for `key`; `None` without endpoints.
    pub fn lookup(&self, key: &[u8]) -> Option<usize> {
        let len = self.table.len() as u64;
        if len == 0 {
            return None;
        }
        let slot = fnv1a(key, 0xcbf2_9ce4_8422_2325) % len;
        self.table.get(slot as usize).map(|i| *i as usize)
    }
}

/// FNV-1a with a given offset basis, then a final mix so that nearby keys spread.
fn fnv1a(bytes: &[u8], basis: u64) -> u64 {
    let mut h = basis;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    fn assignments(table: &Maglev, names: &[String], keys: &[String]) -> Vec<String> {
        keys.iter()
            .map(|k| names[table.lookup(k.as_bytes()).expect("an endpoint")].clone())
            .collect()
    }

    #[test]
    fn shares_are_even() {
        let names = names(7);
        let table = Maglev::new(&names);
        let mut counts = vec![0u64; names.len()];
        for i in table.table.iter() {
            counts[*i as usize] += 1;
        }
        let ideal = TABLE_SIZE / 7;
        for c in counts {
            assert!(c.abs_diff(ideal) <= ideal / 100, "{c} slots, ideal {ideal}");
        }
    }

    #[test]
    fn one_endpoint_more_or_less_moves_about_one_nth_of_the_keys() {
        const N: usize = 10;
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let before_names = names(N);
        let before = assignments(&Maglev::new(&before_names), &before_names, &keys);

        // Removing one: its keys must move; few others may.
        let mut fewer = before_names.clone();
        fewer.remove(3);
        let after = assignments(&Maglev::new(&fewer), &fewer, &keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let share = moved as f64 / keys.len() as f64;
        assert!(
            (0.08..=0.13).contains(&share),
            "removal moved {share:.3} of the keys"
        );
        for (b, a) in before.iter().zip(&after) {
            if b != &before_names[3] {
                continue;
            }
            assert_ne!(a, b);
        }

        // Adding one: about 1/(N+1) move, to the new endpoint mostly.
        let mut more = before_names.clone();
        more.push("10.0.0.99:8080".into());
        let after = assignments(&Maglev::new(&more), &more, &keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let share = moved as f64 / keys.len() as f64;
        assert!(
            (0.07..=0.12).contains(&share),
            "addition moved {share:.3} of the keys"
        );
    }

    #[test]
    fn the_table_depends_on_the_endpoints_not_their_order() {
        let names = names(5);
        let mut reversed = names.clone();
        reversed.reverse();
        let (a, b) = (Maglev::new(&names), Maglev::new(&reversed));
        for key in ["alice", "bob", "carol", "dave"] {
            let x = &names[a.lookup(key.as_bytes()).expect("endpoint")];
            let y = &reversed[b.lookup(key.as_bytes()).expect("endpoint")];
            assert_eq!(x, y, "{key}");
        }
    }
}
