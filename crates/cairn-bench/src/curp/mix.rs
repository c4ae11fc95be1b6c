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
/// (rank 0 the most popular), drawn from an alias table (Vose): one uniform slot and one coin
/// per draw, so a draw costs one memory access. (Inverting the CDF by binary search cost ~20
/// cache misses over a million keys: 10% of the load generator's CPU.)
pub struct Keys {
    key_space: u64,
    /// Empty for uniform keys.
    slots: Vec<AliasSlot>,
}

/// A slot keeps its own index with probability `keep`, else answers `alias`.
#[derive(Clone, Copy, Debug)]
struct AliasSlot {
    keep: f32,
    alias: u32,
}

impl Keys {
    pub fn new(key_space: u64, zipf: f64) -> Keys {
        assert!(key_space > 0, "the key space holds at least one key");
        let slots = if zipf > 0.0 {
            assert!(
                key_space <= u64::from(u32::MAX),
                "a Zipf key space fits u32 indexes"
            );
            let weights: Vec<f64> = (1..=key_space)
                .map(|rank| 1.0 / (rank as f64).powf(zipf))
                .collect();
            alias_table(&weights)
        } else {
            Vec::new()
        };
        Keys { key_space, slots }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        let slot = rng.gen_range(0..self.key_space);
        match self.slots.get(slot as usize) {
            None => slot,
            Some(s) if rng.gen::<f32>() < s.keep => slot,
            Some(s) => u64::from(s.alias),
        }
    }
}

/// Vose's alias method: every slot holds probability mass `1 / n`, made of its own index's
/// share and, topping it up, one donor's.
fn alias_table(weights: &[f64]) -> Vec<AliasSlot> {
    let n = weights.len();
    let total: f64 = weights.iter().sum();
    // Each index's mass in units of one slot.
    let mut mass: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
    let mut slots = vec![
        AliasSlot {
            keep: 1.0,
            alias: 0
        };
        n
    ];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| mass[i] < 1.0);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        slots[s] = AliasSlot {
            keep: mass[s] as f32,
            alias: l as u32,
        };
        mass[l] -= 1.0 - mass[s];
        if mass[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    // What is left holds a full slot up to rounding: it keeps its own index.
    slots
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

    #[test]
    fn zipf_draws_follow_the_exact_probabilities() {
        let (keys, exponent) = (50u64, 1.2);
        let zipf = Keys::new(keys, exponent);
        let weights: Vec<f64> = (1..=keys)
            .map(|r| 1.0 / (r as f64).powf(exponent))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let draws = 400_000;
        let mut counts = vec![0u32; keys as usize];
        for _ in 0..draws {
            counts[zipf.draw(&mut rng) as usize] += 1;
        }
        for (rank, (&count, weight)) in counts.iter().zip(&weights).enumerate() {
            let expected = weight / total * f64::from(draws);
            // Five standard deviations of a binomial count.
            let tolerance = 5.0 * expected.sqrt() + 1.0;
            assert!(
                (f64::from(count) - expected).abs() < tolerance,
                "rank {rank}: {count} draws, expected {expected:.0}"
            );
        }
    }
}
