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

/// A model's price class, as Workers AI describes them: what one request (or one text, for
/// embeddings and classifiers) costs, in whole Neurons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceClass {
    /// Embeddings, classifiers and small text models: 1 to 5 Neurons.
    Lightweight,
    /// Text generation and image analysis: 10 to 50 Neurons.
    Standard,
    /// Large language models and image generation: 100 Neurons and more.
    Complex,
    /// An operator's price outside every range.
    Custom,
}

impl PriceClass {
    /// Its name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lightweight => "lightweight",
            Self::Standard => "standard",
            Self::Complex => "complex",
            Self::Custom => "custom",
        }
    }

    /// Its range of flat prices, in whole Neurons (`None`: no upper end).
    pub fn range(self) -> (u64, Option<u64>) {
        match self {
            Self::Lightweight => (1, Some(5)),
            Self::Standard => (10, Some(50)),
            Self::Complex => (100, None),
            Self::Custom => (0, None),
        }
    }

    /// The class whose range an operator's price falls in, or [`PriceClass::Custom`].
    pub fn of(rule: PricingRule) -> Self {
        [Self::Lightweight, Self::Standard, Self::Complex]
            .into_iter()
            .find(|class| class.admits(rule))
            .unwrap_or(Self::Custom)
    }

    /// Whether `rule` prices a request within this class's range (a per-token rule is judged
    /// on a request of 1,000 tokens in and 100 out).
    pub fn admits(self, rule: PricingRule) -> bool {
        let neurons = typical_cost(rule) / MICRO;
        let (low, high) = self.range();
        neurons >= low && high.is_none_or(|high| neurons <= high)
    }
}

/// What `rule` charges a typical request: one text, or 1,000 tokens in and 100 out.
fn typical_cost(rule: PricingRule) -> u64 {
    let typical = Metered {
        input_tokens: 1000,
        output_tokens: 100,
        items: 1,
    };
    cost(rule, typical)
}

impl PricingRule {
    /// How the rule reads in a listing, a flat price per `item` (request, text, image):
    /// "3 Neurons per request".
    pub fn describe(self, item: &str) -> String {
        match self {
            Self::PerRequest { micro } => {
                let unit = if micro == MICRO { "Neuron" } else { "Neurons" };
                format!("{} {unit} per {item}", neurons(micro))
            }
            Self::PerToken {
                input_per_million,
                output_per_million,
            } => format!(
                "{input_per_million} Neurons per million input tokens, {output_per_million} per million output tokens"
            ),
        }
    }
}

/// Micro-Neurons as Neurons, without trailing zeros.
fn neurons(micro: u64) -> String {
    let whole = micro / MICRO;
    let frac = micro % MICRO;
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:06}")
            .trim_end_matches('0')
            .to_owned()
    }
}

/// What a request used, as pricing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metered {
    /// Input (prompt or embedded) tokens.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Texts embedded or classified, else 0.
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
    fn classes_admit_the_prices_of_their_range_only() {
        assert!(PriceClass::Lightweight.admits(PricingRule::per_request(1)));
        assert!(PriceClass::Lightweight.admits(PricingRule::per_request(5)));
        assert!(!PriceClass::Lightweight.admits(PricingRule::per_request(6)));
        assert!(PriceClass::Standard.admits(PricingRule::per_request(12)));
        assert!(!PriceClass::Standard.admits(PricingRule::per_request(3)));
        assert!(PriceClass::Complex.admits(PricingRule::per_request(1000)));
        let per_token = PricingRule::PerToken {
            input_per_million: 10_000,
            output_per_million: 50_000,
        };
        // 1,000 in and 100 out: 10 + 5 Neurons.
        assert!(PriceClass::Standard.admits(per_token));
        assert_eq!(PriceClass::of(per_token), PriceClass::Standard);
        assert_eq!(
            PriceClass::of(PricingRule::per_request(7)),
            PriceClass::Custom
        );
        assert_eq!(
            PriceClass::of(PricingRule::per_request(2)),
            PriceClass::Lightweight
        );
        assert_eq!(
            PriceClass::of(PricingRule::per_request(100)),
            PriceClass::Complex
        );
        assert_eq!(
            PricingRule::per_request(3)
                .describe("request")
                .split(' ')
                .next(),
            Some("3")
        );
        assert_eq!(neurons(1_500_000), "1.5");
    }

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
