//! What a request costs. Each catalog model has one rule, as Workers AI prices its models:
//!
//! - **per request**: a flat price by model class (a 10-word and a 200-word answer cost the
//!   same); for embedding models the price is per text embedded;
//! - **per token**: Neurons per million input tokens and per million output tokens (a rate of
//!   R Neurons per million tokens is exactly R micro-Neurons per token).
//!
//! [`cost`] prices what ran; [`max_cost`] bounds what a request could cost before it runs, for
//! the quota's reservation.

use serde::{Deserialize, Serialize};

use super::MICRO;

/// A model's pricing rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingRule {
    /// A flat price per request, or per text embedded (embedding models), in micro-Neurons.
    PerRequest {
        /// Micro-Neurons per request (per text, for embeddings).
        micro: u64,
    },
    /// Neurons per million input and output tokens.
    PerToken {
        /// Neurons per million input tokens (= micro-Neurons per input token).
        input_per_million: u64,
        /// Neurons per million output tokens (= micro-Neurons per output token).
        output_per_million: u64,
    },
}

impl PricingRule {
    /// A flat price of `neurons` whole Neurons.
    pub const fn per_request(neurons: u64) -> Self {
        Self::PerRequest {
            micro: neurons * MICRO,
        }
    }
}

/// What a request used, as pricing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metered {
    /// Input (prompt or embedded) tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Texts embedded (embedding requests), else 0.
    pub items: u64,
}

/// What `used` costs under `rule`, in micro-Neurons (saturating: never wraps).
pub fn cost(rule: PricingRule, used: Metered) -> u64 {
    match rule {
        PricingRule::PerRequest { micro } => micro.saturating_mul(used.items.max(1)),
        PricingRule::PerToken {
            input_per_million,
            output_per_million,
        } => used
            .input_tokens
            .saturating_mul(input_per_million)
            .saturating_add(used.output_tokens.saturating_mul(output_per_million)),
    }
}

/// The most a request could cost: its prompt tokens (an upper estimate is fine), `max_tokens`
/// of output, `items` texts.
pub fn max_cost(rule: PricingRule, prompt_tokens: u64, max_tokens: u64, items: u64) -> u64 {
    cost(
        rule,
        Metered {
            input_tokens: prompt_tokens,
            output_tokens: max_tokens,
            items,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_prices_ignore_length_and_embeddings_pay_per_text() {
        let rule = PricingRule::per_request(3);
        let short = Metered {
            input_tokens: 10,
            output_tokens: 5,
            items: 0,
        };
        let long = Metered {
            input_tokens: 900,
            output_tokens: 400,
            items: 0,
        };
        assert_eq!(cost(rule, short), 3 * MICRO);
        assert_eq!(cost(rule, long), 3 * MICRO);
        let per_text = PricingRule::per_request(1);
        let batch = Metered {
            input_tokens: 40,
            output_tokens: 0,
            items: 8,
        };
        assert_eq!(cost(per_text, batch), 8 * MICRO);
    }

    #[test]
    fn token_rates_are_exact_micro_neurons_per_token() {
        // llama-3.2-1b-instruct on Workers AI: 2,457 in / 18,252 out per million tokens.
        let rule = PricingRule::PerToken {
            input_per_million: 2_457,
            output_per_million: 18_252,
        };
        let used = Metered {
            input_tokens: 1_000,
            output_tokens: 500,
            items: 0,
        };
        assert_eq!(cost(rule, used), 2_457_000 + 9_126_000);
        assert_eq!(max_cost(rule, 1_000, 500, 0), cost(rule, used));
        assert_eq!(
            cost(
                rule,
                Metered {
                    input_tokens: u64::MAX,
                    ..used
                }
            ),
            u64::MAX
        );
    }
}
