//! Hotaru's own source of random bytes, so that a seeded run (a test, a simulated fleet)
//! draws the same bytes twice.
//!
//! ring's `SecureRandom` is a sealed trait: nothing seeded can be passed where it is asked
//! for. Everything that draws key material in Hotaru takes a [`Random`] instead: the
//! operating system's CSPRNG in production ([`OsRandom`]), a ChaCha20 stream from a seed in
//! tests and simulations ([`SeededRandom`]). Export files are signed with deterministic
//! ECDSA (RFC 6979), which draws nothing.
//!
//! A device owns its generator ([`Random`], `&mut self`). A server node's actors share one
//! source, injected like the clock ([`RandomSource`], `&self`): the OS CSPRNG in production
//! (stateless), a seeded stream behind a lock in tests ([`SeededSource`]), so that a seeded
//! node run step by step writes the same bytes twice.

/// A source of random bytes.
pub trait Random: Send {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);

    fn array<const N: usize>(&mut self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    /// A uniform value in `0..n` (`n > 0`), without modulo bias.
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let mut b = [0u8; 8];
            self.fill(&mut b);
            let v = u64::from_le_bytes(b);
            if v < zone {
                return v % n;
            }
        }
    }
}

/// The operating system's CSPRNG (through ring).
pub struct OsRandom(ring::rand::SystemRandom);

impl OsRandom {
    pub fn new() -> Self {
        Self(ring::rand::SystemRandom::new())
    }
}

impl Default for OsRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl Random for OsRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        ring::rand::SecureRandom::fill(&self.0, dest).expect("the OS random source works");
    }
}

/// A deterministic ChaCha20 stream: the same seed gives the same bytes, on every machine
/// and every build (rand_chacha's output is fixed by the ChaCha20 specification).
pub struct SeededRandom(rand_chacha::ChaCha20Rng);

impl SeededRandom {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        use rand_chacha::rand_core::SeedableRng;
        Self(rand_chacha::ChaCha20Rng::from_seed(seed))
    }

    /// A seed from a number, for tests and fleets (`--seed 7`); `stream` separates the
    /// generators of one run (one per device).
    pub fn from_u64(seed: u64, stream: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(&stream.to_le_bytes());
        s[16..].copy_from_slice(b"hotaru-seeded-rd");
        Self::from_seed(s)
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        use rand_chacha::rand_core::RngCore;
        self.0.fill_bytes(dest);
    }
}

impl Random for Box<dyn Random> {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest);
    }
}

/// A source of random bytes shared by a node's actors, injected like the clock.
pub trait RandomSource: Send + Sync + 'static {
    /// Fills `dest` with random bytes.
    fn draw(&self, dest: &mut [u8]);
}

impl dyn RandomSource {
    /// `N` random bytes.
    pub fn array<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.draw(&mut b);
        b
    }
}

impl RandomSource for OsRandom {
    fn draw(&self, dest: &mut [u8]) {
        ring::rand::SecureRandom::fill(&self.0, dest).expect("the OS random source works");
    }
}

/// A shared source as a generator, for what takes `&mut dyn Random` (key generation).
impl Random for &dyn RandomSource {
    fn fill(&mut self, dest: &mut [u8]) {
        self.draw(dest);
    }
}

/// A seeded ChaCha20 stream shared by a node's actors (tests, simulations). Bytes go to
/// whoever draws next: a run is reproducible when its steps are (one request at a time).
pub struct SeededSource(std::sync::Mutex<SeededRandom>);

impl SeededSource {
    pub fn from_u64(seed: u64) -> Self {
        Self(std::sync::Mutex::new(SeededRandom::from_u64(
            seed,
            u64::MAX,
        )))
    }
}

impl RandomSource for SeededSource {
    fn draw(&self, dest: &mut [u8]) {
        self.0.lock().expect("not poisoned").fill(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_differ_by_seed_and_stream() {
        let a: [u8; 32] = SeededRandom::from_u64(7, 1).array();
        let b: [u8; 32] = SeededRandom::from_u64(7, 1).array();
        let c: [u8; 32] = SeededRandom::from_u64(7, 2).array();
        let d: [u8; 32] = SeededRandom::from_u64(8, 1).array();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        // ChaCha20 with an all-zero key: the RFC 8439 block-function test vector's stream.
        let zero: [u8; 8] = SeededRandom::from_seed([0; 32]).array();
        assert_eq!(hex::encode(zero), "76b8e0ada0f13d90");
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = SeededRandom::from_u64(1, 0);
        let mut seen = [false; 7];
        for _ in 0..500 {
            let v = r.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let mut os = OsRandom::new();
        assert_ne!(os.array::<16>(), [0u8; 16]);
    }

    #[test]
    fn a_seeded_source_repeats_and_the_os_source_does_not() {
        let a: &dyn RandomSource = &SeededSource::from_u64(3);
        let b: &dyn RandomSource = &SeededSource::from_u64(3);
        let c: &dyn RandomSource = &SeededSource::from_u64(4);
        let first = a.array::<32>();
        assert_eq!(first, b.array::<32>());
        assert_ne!(first, c.array::<32>());
        assert_ne!(first, a.array::<32>());
        let os: &dyn RandomSource = &OsRandom::new();
        assert_ne!(os.array::<32>(), os.array::<32>());
    }
}
