//! numpy's `Generator` (`numpy.random.default_rng(seed)`), as far as the RobustLT and
//! MCAT long-tailed splits use it: `SeedSequence(seed)` expanded to a 128-bit PCG64
//! state and increment, PCG64's XSL-RR output, 32-bit draws taken from halves of a
//! buffered 64-bit output, bounded integers by masked rejection, and the in-place
//! Fisher-Yates `shuffle` (numpy 1.17 to 2.x; checked against numpy 2.4 in
//! `tests/numpy_reference.rs`).

/// SeedSequence's constants (numpy/random/bit_generator.pyx).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// PCG64's 128-bit LCG multiplier.
const PCG_MULT: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;

/// SeedSequence(entropy).generate_state(words, uint32): the entropy pool mixed from the
/// seed's 32-bit little-endian words, then hashed out word by word.
fn seed_sequence_u32(seed: u64, words: usize) -> Vec<u32> {
    let mut entropy = vec![seed as u32];
    if seed >> 32 != 0 {
        entropy.push((seed >> 32) as u32);
    }
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| {
        let mut v = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        v = v.wrapping_mul(hash_const);
        v ^ (v >> XSHIFT)
    };
    let mix = |x: u32, y: u32| {
        let r = x.wrapping_mul(MIX_MULT_L).wrapping_sub(y.wrapping_mul(MIX_MULT_R));
        r ^ (r >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, p) in pool.iter_mut().enumerate() {
        *p = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let h = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], h);
            }
        }
    }
    for &e in entropy.iter().skip(POOL_SIZE) {
        for p in pool.iter_mut() {
            let h = hashmix(e);
            *p = mix(*p, h);
        }
    }
    let mut hash_const = INIT_B;
    (0..words)
        .map(|i| {
            let mut v = pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> XSHIFT)
        })
        .collect()
}

/// `numpy.random.default_rng(seed)` for a non-negative integer seed.
#[derive(Clone, Debug)]
pub struct NumpyGenerator {
    state: u128,
    inc: u128,
    /// The upper half of the last 64-bit output, not yet used by a 32-bit draw.
    buffered: Option<u32>,
}

impl NumpyGenerator {
    /// The generator `numpy.random.default_rng(seed)` returns: PCG64 seeded from
    /// SeedSequence(seed).generate_state(4, uint64) = (s0, s1, i0, i1), state seed
    /// s0 * 2^64 + s1 and increment seed i0 * 2^64 + i1 (PCG's srandom: state 0,
    /// inc = 2 i + 1, step, state += s, step).
    pub fn new(seed: u64) -> Self {
        let w = seed_sequence_u32(seed, 8);
        let word = |k: usize| u64::from(w[2 * k]) | u64::from(w[2 * k + 1]) << 32;
        let s = u128::from(word(0)) << 64 | u128::from(word(1));
        let i = u128::from(word(2)) << 64 | u128::from(word(3));
        let mut g = Self { state: 0, inc: i << 1 | 1, buffered: None };
        g.step();
        g.state = g.state.wrapping_add(s);
        g.step();
        g
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// The next 64-bit output (`bit_generator.random_raw()`): step, then XSL-RR:
    /// rotr((hi ^ lo), state >> 122).
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let folded = ((self.state >> 64) as u64) ^ (self.state as u64);
        folded.rotate_right((self.state >> 122) as u32)
    }

    /// The next 32-bit draw: the low half of a fresh 64-bit output, then its high half.
    pub fn next_u32(&mut self) -> u32 {
        if let Some(hi) = self.buffered.take() {
            return hi;
        }
        let v = self.next_u64();
        self.buffered = Some((v >> 32) as u32);
        v as u32
    }

    /// A uniform integer in 0..=max by masked rejection (32-bit draws when max fits).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let v = self.next_u64() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `Generator.shuffle` of a 1-D array, in place: for i from n-1 down to 1, swap
    /// item i with item interval(i).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }
}
