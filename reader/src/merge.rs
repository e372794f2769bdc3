//! The merge of a reader's journals: a tournament tree over the write time
//! of each journal's next frame. Changing one journal's entry replays its
//! path to the root, log2(k) branch-free comparisons, and the root is the
//! earliest frame: a frame costs O(log k), not a look at each of k heads.

/// One entry: the write time mapped to an order-preserving u64 in the high
/// half, the journal's index in the low half (so ties go to the lower
/// index, and every entry is distinct).
type Key = u128;

/// A journal with no next frame known.
const NONE: Key = Key::MAX;

fn key(time_ns: i64, index: usize) -> Key {
    let t = (time_ns as u64) ^ (1 << 63);
    (t as Key) << 64 | index as Key
}

/// Minimum over the journals' next write times.
#[derive(Debug, Default)]
pub(crate) struct Merge {
    /// Leaves (one per journal) at `[n, 2n)`, each inner node the least of
    /// its two children; `tree[1]` is the root. Empty when `n` is 0.
    tree: Vec<Key>,
    n: usize,
}

impl Merge {
    /// Makes room for journal `index` (indices are dense from 0).
    pub fn grow(&mut self, index: usize) {
        if index < self.n {
            return;
        }
        let n = (index + 1).next_power_of_two().max(2);
        let old: Vec<Key> = (0..self.n).map(|i| self.tree[self.n + i]).collect();
        self.n = n;
        self.tree = vec![NONE; 2 * n];
        for (i, k) in old.into_iter().enumerate() {
            self.tree[n + i] = k;
        }
        for node in (1..n).rev() {
            self.tree[node] = self.tree[2 * node].min(self.tree[2 * node + 1]);
        }
    }

    /// Journal `index`'s next frame has write time `time` (`None`: not
    /// known).
    #[inline]
    pub fn set(&mut self, index: usize, time: Option<i64>) {
        let mut node = self.n + index;
        let mut least = time.map_or(NONE, |t| key(t, index));
        self.tree[node] = least;
        // Up the path, the new least is in a register: only the sibling is
        // loaded at each level, so the levels do not wait on each other's
        // stores.
        while node > 1 {
            least = least.min(self.tree[node ^ 1]);
            node /= 2;
            self.tree[node] = least;
        }
    }

    /// The journal with the earliest next frame and that frame's write
    /// time, if any is known.
    #[inline]
    pub fn first_with_time(&self) -> Option<(usize, i64)> {
        let k = *self.tree.get(1)?;
        (k != NONE).then_some((k as u64 as usize, ((k >> 64) as u64 ^ (1 << 63)) as i64))
    }

    /// Whether journal `index`'s next frame is known.
    pub fn is_known(&self, index: usize) -> bool {
        index < self.n && self.tree[self.n + index] != NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, for deterministic random updates.
    fn mix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn first_is_the_least_time_ties_to_the_lower_index() {
        for k in [1usize, 2, 3, 5, 16, 17, 64] {
            let mut m = Merge::default();
            let mut model: Vec<Option<i64>> = Vec::new();
            for step in 0..4000u64 {
                let r = mix(step ^ (k as u64) << 32);
                // Journals are added over time, as a reader does.
                if model.len() < k && r % 7 == 0 {
                    m.grow(model.len());
                    model.push(None);
                }
                if model.is_empty() {
                    continue;
                }
                let i = (r >> 8) as usize % model.len();
                // Few distinct times (ties), negative ones, and none.
                let t = match (r >> 20) % 5 {
                    0 => None,
                    1 => Some(i64::MIN + (r >> 40) as i64 % 3),
                    2 => Some(-((r >> 40) as i64 % 5)),
                    _ => Some((r >> 40) as i64 % 5),
                };
                m.set(i, t);
                model[i] = t;
                let want = model
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| t.map(|t| (t, i)))
                    .min()
                    .map(|(_, i)| i);
                assert_eq!(
                    m.first_with_time().map(|(i, _)| i),
                    want,
                    "k {k} step {step}: {model:?}"
                );
                let want_t = want.map(|i| (i, model[i].expect("known")));
                assert_eq!(m.first_with_time(), want_t);
                for (j, t) in model.iter().enumerate() {
                    assert_eq!(m.is_known(j), t.is_some());
                }
            }
        }
    }

    #[test]
    fn empty_merge_has_no_first() {
        let m = Merge::default();
        assert_eq!(m.first_with_time(), None);
        assert!(!m.is_known(0));
    }
}
