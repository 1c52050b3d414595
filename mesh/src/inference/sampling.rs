//! Seeded sampling. mistralrs seeds one sampler RNG per engine, shared by all requests, so a
//! request's seed could not make its output reproducible. Instead, sampling happens here, in a
//! logits processor with its own RNG, and mistralrs decodes greedily: the processor leaves only
//! the token it drew, so the greedy pick is that token.

use std::sync::Mutex;

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Temperature / top-p sampling with a private, seeded RNG.
pub struct SeededSampler {
    temperature: f32,
    top_p: f32,
    rng: Mutex<StdRng>,
}

impl SeededSampler {
    /// A sampler; the same seed and the same logits give the same tokens.
    pub fn new(temperature: f32, top_p: Option<f32>, seed: u64) -> Self {
        Self {
            temperature,
            top_p: top_p.unwrap_or(1.0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Takes `draws` draws and forgets them: the sampler then stands where one that drew
    /// `draws` tokens stands (each token takes one draw).
    pub fn skip(&self, draws: u32) {
        for _ in 0..draws {
            self.uniform();
        }
    }

    fn uniform(&self) -> f32 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .random::<f32>()
    }

    /// Draws a token index from `logits` (pure apart from the RNG).
    pub fn draw(&self, logits: &[f32]) -> usize {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if self.top_p >= 1.0 {
            return self.draw_from_all(logits, max);
        }
        let mut probs: Vec<(usize, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l - max) / self.temperature).exp()))
            .filter(|(_, p)| p.is_finite() && *p > 0.0)
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f32 = probs.iter().map(|(_, p)| p).sum();
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, (_, p)) in probs.iter().enumerate() {
            kept += p / total;
            if kept >= self.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut.max(1));
        let mass: f32 = probs.iter().map(|(_, p)| p).sum();
        let mut target = self.uniform() * mass;
        for (index, p) in &probs {
            target -= p;
            if target <= 0.0 {
                return *index;
            }
        }
        probs.last().map_or(0, |(i, _)| *i)
    }

    /// Without a top-p cut: two passes over the logits, no allocation and no sort (the engine
    /// samples every sequence's token on one thread, and a vocabulary has ~50k entries).
    fn draw_from_all(&self, logits: &[f32], max: f32) -> usize {
        let weight = |l: f32| {
            let p = ((l - max) / self.temperature).exp();
            if p.is_finite() && p > 0.0 { p } else { 0.0 }
        };
        let mass: f32 = logits.iter().map(|&l| weight(l)).sum();
        let mut target = self.uniform() * mass;
        let mut last = 0;
        for (index, &l) in logits.iter().enumerate() {
            let p = weight(l);
            if p > 0.0 {
                last = index;
                target -= p;
                if target <= 0.0 {
                    return index;
                }
            }
        }
        last
    }
}

impl mistralrs::CustomLogitsProcessor for SeededSampler {
    fn apply(&self, logits: &Tensor, _context: &[u32]) -> candle_core::Result<Tensor> {
        let values = logits
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let chosen = self.draw(&values);
        let mut mask = vec![f32::NEG_INFINITY; values.len()];
        mask[chosen] = 0.0;
        Tensor::from_vec(mask, logits.shape(), logits.device())?.to_dtype(logits.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draws = |seed| {
            let s = SeededSampler::new(1.0, None, seed);
            (0..20).map(|_| s.draw(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn without_top_p_tokens_are_drawn_in_proportion() {
        // Two tokens at equal logits, the rest far below: about half each, never the rest.
        let mut logits = vec![-40.0f32; 1000];
        logits[10] = 2.0;
        logits[900] = 2.0;
        let s = SeededSampler::new(1.0, None, 3);
        let draws: Vec<usize> = (0..1000).map(|_| s.draw(&logits)).collect();
        assert!(draws.iter().all(|&d| d == 10 || d == 900));
        let tens = draws.iter().filter(|&&d| d == 10).count();
        assert!((400..600).contains(&tens), "{tens}");
    }

    #[test]
    fn top_p_keeps_only_the_likely_tokens() {
        let mut logits = vec![-20.0f32; 10];
        logits[3] = 5.0;
        let s = SeededSampler::new(1.0, Some(0.5), 1);
        assert!((0..100).all(|_| s.draw(&logits) == 3));
    }
}
