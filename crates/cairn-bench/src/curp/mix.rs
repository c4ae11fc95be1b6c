//! The operation mix of `cairn bench curp`: which class each operation falls in (exact
//! percentages) and which key it touches (uniform or Zipf).

use rand::Rng;

/// The four classes the report splits latencies by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    StrongRead,
    StrongWrite,
    WeakRead,
    WeakWrite,
}

/// Percentages, each in 0..=100: `weak_ratio` of all ops are weak; `writes` of the strong
/// ones and `weak_writes` of the weak ones write.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub weak_ratio: u32,
    pub writes: u32,
    pub weak_writes: u32,
}

impl Mix {
    /// Draws a class: `u < p` over a uniform `u` in 0..100, so p = 10 is exactly 10 %.
    pub fn draw(&self, rng: &mut impl Rng) -> Class {
        let weak = rng.gen_range(0..100) < self.weak_ratio;
        match weak {
            true if rng.gen_range(0..100) < self.weak_writes => Class::WeakWrite,
            true => Class::WeakRead,
            false if rng.gen_range(0..100) < self.writes => Class::StrongWrite,
            false => Class::StrongRead,
        }
    }
}

/// Key indexes in `0..key_space`: uniform for exponent 0, else Zipf with that exponent
/// (rank 0 the most popular), drawn by inverting a precomputed CDF.
pub struct Keys {
    key_space: u64,
    cdf: Vec<f64>,
}

impl Keys {
    pub fn new(key_space: u64, zipf: f64) -> Keys {
        assert!(key_space > 0, "the key space holds at least one key");
        let cdf = if zipf > 0.0 {
            let mut total = 0.0;
            let mut cdf: Vec<f64> = (1..=key_space)
                .map(|rank| {
                    total += 1.0 / (rank as f64).powf(zipf);
                    total
                })
                .collect();
            for value in &mut cdf {
                *value /= total;
            }
            cdf
        } else {
            Vec::new()
        };
        Keys { key_space, cdf }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        if self.cdf.is_empty() {
            return rng.gen_range(0..self.key_space);
        }
        let u: f64 = rng.gen();
        let rank = self.cdf.partition_point(|&value| value < u);
        (rank as u64).min(self.key_space - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn percentages_are_exact_over_many_draws() {
        let mix = Mix {
            weak_ratio: 50,
            writes: 10,
            weak_writes: 10,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0u32; 4];
        let draws = 200_000;
        for _ in 0..draws {
            counts[mix.draw(&mut rng) as usize] += 1;
        }
        let share = |count: u32| f64::from(count) / f64::from(draws) * 100.0;
        // Strong read 45 %, strong write 5 %, weak read 45 %, weak write 5 %.
        assert!((share(counts[0]) - 45.0).abs() < 0.5, "{counts:?}");
        assert!((share(counts[1]) - 5.0).abs() < 0.3, "{counts:?}");
        assert!((share(counts[2]) - 45.0).abs() < 0.5, "{counts:?}");
        assert!((share(counts[3]) - 5.0).abs() < 0.3, "{counts:?}");
        let none = Mix {
            weak_ratio: 0,
            writes: 100,
            weak_writes: 0,
        };
        assert!((0..1000).all(|_| none.draw(&mut rng) == Class::StrongWrite));
    }

    #[test]
    fn zipf_favours_low_ranks_and_uniform_does_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let zipf = Keys::new(1000, 0.9);
        let hot = (0..10_000).filter(|_| zipf.draw(&mut rng) < 10).count();
        let uniform = Keys::new(1000, 0.0);
        let cold = (0..10_000).filter(|_| uniform.draw(&mut rng) < 10).count();
        // Zipf(0.9) over 1000 keys puts about a third of the draws on the top 10.
        assert!(hot > 2_500, "{hot}");
        assert!(cold < 200, "{cold}");
        assert!((0..10_000).all(|_| zipf.draw(&mut rng) < 1000));
    }
}
