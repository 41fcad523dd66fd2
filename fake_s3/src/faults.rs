//! Fault injection: added latency, errors (500 `InternalError`, 503
//! `SlowDown`), dropped connections and stalls, chosen per S3 operation
//! from a seed so that a run repeats.
//!
//! A [`FaultConfig`] is a seed and a list of rules; every rule whose
//! `operations` include the request's operation (or `"*"`) applies, in
//! order. The n-th request of an operation since the configuration was set
//! draws from a generator seeded by (seed, operation, n), so the same
//! sequence of requests per operation meets the same faults whatever the
//! interleaving of operations or threads.
//!
//! The decision ([`Faults::decide`]) is pure given the configuration and
//! the counters; applying it is the service's job.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to delay a response.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Latency {
    /// Always this many milliseconds: `{"fixed_ms": 50}`.
    FixedMs(u64),
    /// Uniform between the two, inclusive: `{"uniform_ms": [10, 50]}`.
    UniformMs(u64, u64),
    /// Exponential with this mean, capped at ten times it: `{"exponential_mean_ms": 20}`.
    ExponentialMeanMs(u64),
}

impl Latency {
    fn sample(self, random: &mut SplitMix64) -> Duration {
        let ms = match self {
            Latency::FixedMs(ms) => ms as f64,
            Latency::UniformMs(low, high) => {
                let (low, high) = (low.min(high), low.max(high));
                low as f64 + (random.next_f64() * ((high - low + 1) as f64)).floor()
            }
            Latency::ExponentialMeanMs(mean) => {
                let draw = -(mean as f64) * (1.0 - random.next_f64()).ln();
                draw.min(mean as f64 * 10.0)
            }
        };
        Duration::from_micros((ms * 1000.0) as u64)
    }
}

/// One rule: which operations, and what happens to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRule {
    /// S3 operation names (`PutObject`, `GetObject`, ...) or `"*"` for all.
    pub operations: Vec<String>,
    /// Added before the response is written.
    pub latency: Option<Latency>,
    /// Probability of answering 500 `InternalError` without acting.
    pub error_rate: f64,
    /// Probability of answering 503 `SlowDown` without acting.
    pub slowdown_rate: f64,
    /// Probability of closing the connection without acting or answering.
    pub drop_rate: f64,
    /// Probability of acting, then closing without answering (a lost reply).
    pub drop_after_rate: f64,
    /// Probability of stalling: no answer for `stall_ms`, then the
    /// connection is closed, without acting.
    pub stall_rate: f64,
    pub stall_ms: u64,
}

impl Default for FaultRule {
    fn default() -> Self {
        FaultRule {
            operations: vec!["*".to_string()],
            latency: None,
            error_rate: 0.0,
            slowdown_rate: 0.0,
            drop_rate: 0.0,
            drop_after_rate: 0.0,
            stall_rate: 0.0,
            stall_ms: 10_000,
        }
    }
}

impl FaultRule {
    /// A rule for these operations that does nothing yet.
    pub fn for_operations<I: IntoIterator<Item = S>, S: Into<String>>(operations: I) -> FaultRule {
        FaultRule { operations: operations.into_iter().map(Into::into).collect(), ..FaultRule::default() }
    }

    pub fn latency(mut self, latency: Latency) -> FaultRule {
        self.latency = Some(latency);
        self
    }

    pub fn error_rate(mut self, rate: f64) -> FaultRule {
        self.error_rate = rate;
        self
    }

    pub fn slowdown_rate(mut self, rate: f64) -> FaultRule {
        self.slowdown_rate = rate;
        self
    }

    pub fn drop_rate(mut self, rate: f64) -> FaultRule {
        self.drop_rate = rate;
        self
    }

    pub fn drop_after_rate(mut self, rate: f64) -> FaultRule {
        self.drop_after_rate = rate;
        self
    }

    pub fn stall(mut self, rate: f64, stall_ms: u64) -> FaultRule {
        self.stall_rate = rate;
        self.stall_ms = stall_ms;
        self
    }

    fn applies_to(&self, operation: &str) -> bool {
        self.operations.iter().any(|name| name == "*" || name == operation)
    }

    fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("slowdown_rate", self.slowdown_rate),
            ("drop_rate", self.drop_rate),
            ("drop_after_rate", self.drop_after_rate),
            ("stall_rate", self.stall_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, not {rate}"));
            }
        }
        if self.operations.is_empty() {
            return Err("operations must name at least one operation (or \"*\")".into());
        }
        Ok(())
    }
}

/// The whole fault configuration; the default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    pub seed: u64,
    pub rules: Vec<FaultRule>,
}

impl FaultConfig {
    pub fn new(seed: u64) -> FaultConfig {
        FaultConfig { seed, rules: Vec::new() }
    }

    pub fn rule(mut self, rule: FaultRule) -> FaultConfig {
        self.rules.push(rule);
        self
    }

    /// Every PUT of an object (PutObject, UploadPart, CopyObject,
    /// CompleteMultipartUpload) delayed by `ms`: the common case.
    pub fn put_latency_ms(seed: u64, ms: u64) -> FaultConfig {
        FaultConfig::new(seed).rule(
            FaultRule::for_operations(["PutObject", "UploadPart", "CopyObject", "CompleteMultipartUpload"])
                .latency(Latency::FixedMs(ms)),
        )
    }

    pub fn from_json(text: &[u8]) -> Result<FaultConfig, String> {
        let config: FaultConfig = serde_json::from_slice(text).map_err(|error| error.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.rules
            .iter()
            .enumerate()
            .try_for_each(|(index, rule)| rule.validate().map_err(|e| format!("rules[{index}]: {e}")))
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Act and answer normally (after `delay`).
    Proceed,
    /// Answer 500 InternalError without acting.
    InternalError,
    /// Answer 503 SlowDown without acting.
    SlowDown,
    /// Close the connection without acting or answering.
    Drop,
    /// Act, then close the connection without answering.
    DropAfter,
    /// Hold the connection for the delay, then close it, without acting.
    Stall,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub delay: Duration,
}

/// Counts of requests seen and faults injected, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FaultStats {
    pub requests: BTreeMap<String, u64>,
    pub delayed: u64,
    pub internal_errors: u64,
    pub slowdowns: u64,
    pub drops: u64,
    pub drops_after: u64,
    pub stalls: u64,
}

#[derive(Debug, Default)]
struct State {
    config: FaultConfig,
    stats: FaultStats,
}

/// The live configuration and counters, shared by every worker thread.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        Faults { state: Mutex::new(State { config, stats: FaultStats::default() }) }
    }

    /// Replaces the configuration and resets the counters (so that the
    /// draws start again from the seed).
    pub fn set(&self, config: FaultConfig) {
        let mut state = self.lock();
        state.config = config;
        state.stats = FaultStats::default();
    }

    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    pub fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the counters inconsistent in a way
        // that matters; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides the fate of the next request of `operation`.
    pub fn decide(&self, operation: &str) -> Decision {
        let mut state = self.lock();
        let count = state.stats.requests.entry(operation.to_string()).or_insert(0);
        let index = *count;
        *count += 1;
        let decision = decide(&state.config, operation, index);
        let stats = &mut state.stats;
        if !decision.delay.is_zero() {
            stats.delayed += 1;
        }
        match decision.outcome {
            Outcome::Proceed => {}
            Outcome::InternalError => stats.internal_errors += 1,
            Outcome::SlowDown => stats.slowdowns += 1,
            Outcome::Drop => stats.drops += 1,
            Outcome::DropAfter => stats.drops_after += 1,
            Outcome::Stall => stats.stalls += 1,
        }
        decision
    }
}

/// The decision for the `index`-th request of `operation`: pure.
pub fn decide(config: &FaultConfig, operation: &str, index: u64) -> Decision {
    let mut random =
        SplitMix64::new(config.seed ^ fnv1a(operation.as_bytes()) ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut delay = Duration::ZERO;
    for rule in config.rules.iter().filter(|rule| rule.applies_to(operation)) {
        if let Some(latency) = rule.latency {
            delay += latency.sample(&mut random);
        }
        let draws = [
            (rule.stall_rate, Outcome::Stall),
            (rule.drop_rate, Outcome::Drop),
            (rule.error_rate, Outcome::InternalError),
            (rule.slowdown_rate, Outcome::SlowDown),
            (rule.drop_after_rate, Outcome::DropAfter),
        ];
        for (rate, outcome) in draws {
            if rate > 0.0 && random.next_f64() < rate {
                if outcome == Outcome::Stall {
                    delay = Duration::from_millis(rule.stall_ms);
                }
                return Decision { outcome, delay };
            }
        }
    }
    Decision { outcome: Outcome::Proceed, delay }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64: small, fast and good enough for fault draws.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_no_faults() {
        let config = FaultConfig::new(1);
        for index in 0..100 {
            assert_eq!(
                decide(&config, "PutObject", index),
                Decision { outcome: Outcome::Proceed, delay: Duration::ZERO }
            );
        }
    }

    #[test]
    fn fixed_put_latency_touches_only_puts() {
        let config = FaultConfig::put_latency_ms(7, 50);
        assert_eq!(decide(&config, "PutObject", 3).delay, Duration::from_millis(50));
        assert_eq!(decide(&config, "GetObject", 3).delay, Duration::ZERO);
    }

    #[test]
    fn rates_are_repeatable_and_close_to_asked() {
        let config =
            FaultConfig::new(42).rule(FaultRule::for_operations(["GetObject"]).error_rate(0.1).slowdown_rate(0.2));
        let run = || (0..10_000).map(|i| decide(&config, "GetObject", i).outcome).collect::<Vec<_>>();
        let first = run();
        assert_eq!(first, run());
        let errors = first.iter().filter(|o| **o == Outcome::InternalError).count();
        let slowdowns = first.iter().filter(|o| **o == Outcome::SlowDown).count();
        assert!((800..1200).contains(&errors), "{errors}");
        // 20% of the 90% that were not errors.
        assert!((1600..2000).contains(&slowdowns), "{slowdowns}");
        let other_seed = FaultConfig { seed: 43, ..config.clone() };
        let second: Vec<_> = (0..10_000).map(|i| decide(&other_seed, "GetObject", i).outcome).collect();
        assert_ne!(first, second);
    }

    #[test]
    fn latency_distributions_stay_in_bounds() {
        let mut random = SplitMix64::new(9);
        for _ in 0..1000 {
            let uniform = Latency::UniformMs(10, 20).sample(&mut random);
            assert!(uniform >= Duration::from_millis(10) && uniform <= Duration::from_millis(20));
            let exponential = Latency::ExponentialMeanMs(5).sample(&mut random);
            assert!(exponential <= Duration::from_millis(50));
        }
        let mean: f64 =
            (0..10_000).map(|_| Latency::ExponentialMeanMs(5).sample(&mut random).as_secs_f64()).sum::<f64>()
                / 10_000.0;
        assert!((0.004..0.006).contains(&mean), "{mean}");
    }

    #[test]
    fn json_round_trip_and_validation() {
        let text = br#"{"seed": 5, "rules": [{"operations": ["PutObject"], "latency": {"fixed_ms": 50}},
                        {"error_rate": 0.5, "latency": {"uniform_ms": [1, 3]}}]}"#;
        let config = FaultConfig::from_json(text).unwrap();
        assert_eq!(config.rules[0].latency, Some(Latency::FixedMs(50)));
        assert_eq!(config.rules[1].operations, vec!["*".to_string()]);
        let again = FaultConfig::from_json(serde_json::to_string(&config).unwrap().as_bytes()).unwrap();
        assert_eq!(again, config);
        assert!(FaultConfig::from_json(br#"{"rules": [{"error_rate": 2}]}"#).is_err());
        assert!(FaultConfig::from_json(br#"{"rules": [{"eror_rate": 0.1}]}"#).is_err());
        assert!(FaultConfig::from_json(b"not json").is_err());
    }

    #[test]
    fn stall_sets_its_delay() {
        let config = FaultConfig::new(1).rule(FaultRule::default().stall(1.0, 1234));
        assert_eq!(
            decide(&config, "GetObject", 0),
            Decision { outcome: Outcome::Stall, delay: Duration::from_millis(1234) }
        );
    }
}
