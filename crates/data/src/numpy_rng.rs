//! numpy's legacy `RandomState` generator, as far as the reference long-tailed
//! selection uses it: MT19937 seeded by `init_genrand(seed)`, bounded integers by
//! masked rejection sampling, and the in-place Fisher-Yates `shuffle`.

use rand_mt::Mt;

/// `numpy.random.RandomState(seed)` restricted to what the LDAM-DRW/RoBal reference
/// code calls: `shuffle` of a 1-d array. Bit-for-bit equal to numpy's legacy stream.
#[derive(Clone, Debug)]
pub struct NumpyLegacyRng {
    mt: Mt,
}

impl NumpyLegacyRng {
    /// `RandomState(seed)`: MT19937 with `init_genrand(seed)` (the integer-seed path
    /// of numpy's legacy seeding).
    pub fn new(seed: u32) -> Self {
        Self { mt: Mt::new(seed) }
    }

    /// Next raw 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// A uniform integer in `[0, max]` as numpy's legacy `random_interval`:
    /// mask = smallest all-ones bit mask >= max; draw `next & mask` until <= max.
    /// (Only the 32-bit path: every bound here is below 2^32.)
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// numpy's legacy `shuffle` of a 1-d array: for i = len-1 down to 1,
    /// j = interval(i), swap items i and j.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u32) as usize;
            items.swap(i, j);
        }
    }
}
