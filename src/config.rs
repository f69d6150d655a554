//! Every `qa.*` setting: default, bounds and validation side by side.
//!
//! Numbers live in atomics (read lock-free on any thread). Strings live in one mutex-guarded
//! struct together with the digest prefix of the default model and system prompt, so the hit
//! path hashes only the question. A worker never reads these statics: it gets a [`Job`]
//! snapshot made on the main thread.
//!
//! [`Job`]: crate::worker::Job

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use redis_module::configuration::ConfigurationContext;
use redis_module::{
    ConfigurationValue, RedisError, RedisGILGuard, RedisLockIndicator, RedisString,
};

use crate::backend::breaker;
use crate::backend::http::CallSettings;
use crate::backend::Format;
use crate::error;
use crate::keys;

/// An integer setting: name (without `qa.`), default, min, max.
pub struct IntSetting {
    pub name: &'static str,
    pub default: i64,
    pub min: i64,
    pub max: i64,
    value: AtomicI64,
}

impl IntSetting {
    const fn new(name: &'static str, default: i64, min: i64, max: i64) -> Self {
        Self {
            name,
            default,
            min,
            max,
            value: AtomicI64::new(default),
        }
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl ConfigurationValue<i64> for IntSetting {
    fn get(&self, _: &ConfigurationContext) -> i64 {
        self.get()
    }
    fn set(&self, _: &ConfigurationContext, val: i64) -> Result<(), RedisError> {
        // Redis checks min/max before calling this.
        self.value.store(val, Ordering::Relaxed);
        Ok(())
    }
}

pub use crate::backend::MAX_TTL_SECS;

pub static TTL: IntSetting = IntSetting::new("ttl", 3600, 1, MAX_TTL_SECS);
pub static STALE_TTL: IntSetting = IntSetting::new("stale-ttl", 0, 0, MAX_TTL_SECS);
pub static TIMEOUT_MS: IntSetting = IntSetting::new("timeout-ms", 30_000, 100, 600_000);
pub static CONNECT_TIMEOUT_MS: IntSetting =
    IntSetting::new("connect-timeout-ms", 5_000, 10, 60_000);
pub static MAX_INFLIGHT: IntSetting = IntSetting::new("max-inflight", 16, 1, 1024);
pub static MAX_QUEUE: IntSetting = IntSetting::new("max-queue", 1000, 0, 1_000_000);
pub static MAX_QUESTION_BYTES: IntSetting =
    IntSetting::new("max-question-bytes", 8192, 16, 1 << 20);
pub static MAX_ANSWER_BYTES: IntSetting =
    IntSetting::new("max-answer-bytes", 1 << 20, 1024, 64 << 20);
/// `max_tokens` of Anthropic requests (which require one).
pub static MAX_TOKENS: IntSetting = IntSetting::new("max-tokens", 1024, 1, 1_000_000);
/// Retries after a first failed attempt (429, 502, 503, 504, connection reset).
pub static BACKEND_RETRIES: IntSetting = IntSetting::new("backend-retries", 2, 0, 10);
/// Consecutive backend failures that open the circuit breaker; 0 turns it off.
pub static BREAKER_FAILURES: IntSetting = IntSetting::new("breaker-failures", 5, 0, 1_000_000);
pub static BREAKER_COOLDOWN_MS: IntSetting =
    IntSetting::new("breaker-cooldown-ms", 10_000, 100, 3_600_000);
/// `QA.STREAM`: pieces are written at most this often (ms; 0: each as it arrives)...
pub static STREAM_BATCH_MS: IntSetting = IntSetting::new("stream-batch-ms", 50, 0, 1000);
/// ...or as soon as this many bytes wait.
pub static STREAM_BATCH_BYTES: IntSetting = IntSetting::new("stream-batch-bytes", 256, 1, 1 << 20);
/// Seconds a stream key lives after its last entry.
pub static STREAM_LINGER: IntSetting = IntSetting::new("stream-linger", 30, 1, 86_400);
/// Longest `CONTEXT` an asker may send (it is hashed into the key and sent to the backend).
pub static MAX_CONTEXT_BYTES: IntSetting =
    IntSetting::new("max-context-bytes", 65_536, 0, 16 << 20);

/// A yes/no setting: name (without `qa.`) and default.
pub struct BoolSetting {
    pub name: &'static str,
    pub default: bool,
    value: AtomicBool,
}

impl BoolSetting {
    const fn new(name: &'static str, default: bool) -> Self {
        Self {
            name,
            default,
            value: AtomicBool::new(default),
        }
    }

    pub fn get(&self) -> bool {
        self.value.load(Ordering::Relaxed)
    }
}

impl ConfigurationValue<bool> for BoolSetting {
    fn get(&self, _: &ConfigurationContext) -> bool {
        self.get()
    }
    fn set(&self, _: &ConfigurationContext, val: bool) -> Result<(), RedisError> {
        self.value.store(val, Ordering::Relaxed);
        Ok(())
    }
}

/// Store completions cut short by the token limit (they are always replied).
pub static CACHE_TRUNCATED: BoolSetting = BoolSetting::new("cache-truncated", false);
/// The semantic tier for every call (per call: `SEMANTIC` / `EXACT`).
pub static SEMANTIC: BoolSetting = BoolSetting::new("semantic", false);
/// The guards against look-alike questions (numbers, negations...): off only to measure
/// what they prevent.
pub static SEMANTIC_GUARDS: BoolSetting = BoolSetting::new("semantic-guards", true);
/// Save the semantic index's graphs next to the RDB file, and read them back after a load.
pub static SEMANTIC_GRAPH_FILE: BoolSetting = BoolSetting::new("semantic-graph-file", true);

redis_module::enum_configuration! {
    /// The values of `qa.backend-format`, spelled as in the config (the macro uses the
    /// variant names as the accepted words).
    #[allow(non_camel_case_types)]
    #[derive(Debug, PartialEq, Eq, Copy)]
    pub enum BackendFormat {
        openai = 0,
        anthropic = 1,
        webhook = 2,
    }
}

impl From<BackendFormat> for Format {
    fn from(f: BackendFormat) -> Format {
        match f {
            BackendFormat::openai => Format::OpenAi,
            BackendFormat::anthropic => Format::Anthropic,
            BackendFormat::webhook => Format::Webhook,
        }
    }
}

/// `qa.backend-format`: which wire format misses speak.
pub struct FormatSetting {
    pub name: &'static str,
    pub default: BackendFormat,
    value: AtomicI64,
}

pub static BACKEND_FORMAT: FormatSetting = FormatSetting {
    name: "backend-format",
    default: BackendFormat::openai,
    value: AtomicI64::new(BackendFormat::openai as i64),
};

impl FormatSetting {
    pub fn get(&self) -> BackendFormat {
        BackendFormat::try_from(self.value.load(Ordering::Relaxed) as i32).unwrap_or(self.default)
    }
}

impl ConfigurationValue<BackendFormat> for FormatSetting {
    fn get(&self, _: &ConfigurationContext) -> BackendFormat {
        self.get()
    }
    fn set(&self, _: &ConfigurationContext, val: BackendFormat) -> Result<(), RedisError> {
        self.value.store(val as i64, Ordering::Relaxed);
        Ok(())
    }
}

// In a module of its own: the macro imports a trait, which a second use in one module
// would import twice.
mod verify_mode {
    redis_module::enum_configuration! {
        /// The values of `qa.semantic-verify`: what checks a semantic match before it is
        /// served.
        #[allow(non_camel_case_types)]
        #[derive(Debug, PartialEq, Eq, Copy)]
        pub enum VerifyMode {
            none = 0,
            llm = 1,
            rerank = 2,
        }
    }
}
pub use verify_mode::VerifyMode;

/// `qa.semantic-verify`: none (the similarity gate and the guards decide), `llm` (the chat
/// backend is asked yes or no) or `rerank` (a cross-encoder behind `qa.rerank-url`).
pub struct VerifySetting {
    pub name: &'static str,
    pub default: VerifyMode,
    value: AtomicI64,
}

pub static SEMANTIC_VERIFY: VerifySetting = VerifySetting {
    name: "semantic-verify",
    default: VerifyMode::none,
    value: AtomicI64::new(VerifyMode::none as i64),
};

impl VerifySetting {
    pub fn get(&self) -> VerifyMode {
        VerifyMode::try_from(self.value.load(Ordering::Relaxed) as i32).unwrap_or(self.default)
    }
}

impl ConfigurationValue<VerifyMode> for VerifySetting {
    fn get(&self, _: &ConfigurationContext) -> VerifyMode {
        self.get()
    }
    fn set(&self, _: &ConfigurationContext, val: VerifyMode) -> Result<(), RedisError> {
        self.value.store(val as i64, Ordering::Relaxed);
        Ok(())
    }
}

/// Which string setting a [`StrSetting`] is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StrId {
    ContextTemplate,
    BackendUrl,
    Model,
    SystemPrompt,
    ApiKeyFile,
    PriceIn,
    PriceOut,
    CaFile,
    EmbedUrl,
    EmbedModel,
    Threshold,
    RerankUrl,
    RerankModel,
    VerifyThreshold,
    AuditRate,
    TargetPrecision,
}

/// A string setting: name (without `qa.`), default, and which field of [`Strings`] it is.
pub struct StrSetting {
    pub name: &'static str,
    pub default: &'static str,
    id: StrId,
}

pub static BACKEND_URL: StrSetting = StrSetting {
    name: "backend-url",
    default: "",
    id: StrId::BackendUrl,
};
pub static MODEL: StrSetting = StrSetting {
    name: "model",
    default: "gpt-4o-mini",
    id: StrId::Model,
};
pub static SYSTEM_PROMPT: StrSetting = StrSetting {
    name: "system-prompt",
    default: "",
    id: StrId::SystemPrompt,
};
pub static API_KEY_FILE: StrSetting = StrSetting {
    name: "api-key-file",
    default: "",
    id: StrId::ApiKeyFile,
};
pub static BACKEND_CA_FILE: StrSetting = StrSetting {
    name: "backend-ca-file",
    default: "",
    id: StrId::CaFile,
};

pub static PRICE_IN: StrSetting = StrSetting {
    name: "price-input-per-mtok",
    default: "0",
    id: StrId::PriceIn,
};
pub static PRICE_OUT: StrSetting = StrSetting {
    name: "price-output-per-mtok",
    default: "0",
    id: StrId::PriceOut,
};

pub static EMBED_URL: StrSetting = StrSetting {
    name: "embed-url",
    default: "",
    id: StrId::EmbedUrl,
};
pub static EMBED_MODEL: StrSetting = StrSetting {
    name: "embed-model",
    default: "text-embedding-3-small",
    id: StrId::EmbedModel,
};
/// The least cosine similarity of a semantic match (then the guards decide).
pub static SEMANTIC_THRESHOLD: StrSetting = StrSetting {
    name: "semantic-threshold",
    default: DEFAULT_THRESHOLD,
    id: StrId::Threshold,
};
pub const DEFAULT_THRESHOLD: &str = "0.80";

/// Where `qa.semantic-verify rerank` posts (`{url}/rerank`); the backend's key and CA file.
pub static RERANK_URL: StrSetting = StrSetting {
    name: "rerank-url",
    default: "",
    id: StrId::RerankUrl,
};
pub static RERANK_MODEL: StrSetting = StrSetting {
    name: "rerank-model",
    default: "rerank-v3.5",
    id: StrId::RerankModel,
};
/// The least `relevance_score` a reranked match needs to be served.
pub static SEMANTIC_VERIFY_THRESHOLD: StrSetting = StrSetting {
    name: "semantic-verify-threshold",
    default: "0.5",
    id: StrId::VerifyThreshold,
};
/// The share of semantic hits audited: the backend is asked too, in the background, and its
/// answer compared with the served one.
pub static SEMANTIC_AUDIT_RATE: StrSetting = StrSetting {
    name: "semantic-audit-rate",
    default: "0.02",
    id: StrId::AuditRate,
};
/// The precision each cache's effective threshold is calibrated to (0: off).
pub static SEMANTIC_TARGET_PRECISION: StrSetting = StrSetting {
    name: "semantic-target-precision",
    default: "0",
    id: StrId::TargetPrecision,
};

/// How the chat formats (openai, anthropic) put a `CONTEXT` and the question into the user
/// message: `{context}` and `{question}` are replaced (the webhook gets both as fields).
pub static CONTEXT_TEMPLATE: StrSetting = StrSetting {
    name: "context-template",
    default: crate::backend::DEFAULT_CONTEXT_TEMPLATE,
    id: StrId::ContextTemplate,
};

/// A context template: at most 65536 bytes, with a `{context}` (a template without one
/// would send the question alone and cache that answer under the context's key).
pub fn valid_context_template(t: &str) -> bool {
    t.len() <= MAX_SYSTEM_BYTES && t.contains("{context}")
}

/// A price per million tokens: a finite, non-negative decimal.
pub fn parse_price(v: &str) -> Option<f64> {
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    v.parse::<f64>()
        .ok()
        .filter(|p| ok && p.is_finite() && *p >= 0.0)
}

pub const MAX_MODEL_BYTES: usize = 256;
pub const MAX_SYSTEM_BYTES: usize = 65536;

pub fn valid_model(m: &str) -> bool {
    !m.is_empty() && m.len() <= MAX_MODEL_BYTES && !m.chars().any(char::is_control)
}

pub fn valid_system(s: &str) -> bool {
    s.len() <= MAX_SYSTEM_BYTES
}

pub fn valid_path(p: &str) -> bool {
    !p.chars().any(char::is_control)
}

pub fn valid_url(u: &str) -> bool {
    u.is_empty()
        || ((u.starts_with("http://") || u.starts_with("https://"))
            && !u.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// The string settings, plus the digest prefix of the default model and system prompt.
pub struct Strings {
    pub backend_url: String,
    pub model: String,
    pub system_prompt: String,
    pub api_key_file: String,
    pub price_in: String,
    pub price_out: String,
    pub ca_file: String,
    pub embed_url: String,
    pub embed_model: String,
    pub threshold: String,
    pub rerank_url: String,
    pub rerank_model: String,
    pub verify_threshold: String,
    pub audit_rate: String,
    pub target_precision: String,
    pub context_template: String,
    /// The key digest's prefix for the default model and system prompt.
    pub default_prefix: keys::Prefix,
    /// Changes with `default_prefix`: generation states derived from an older one (kept
    /// with the mirrored generations) are stale.
    pub prefix_epoch: u64,
}

impl Strings {
    /// (input, output) prices per million tokens.
    pub fn prices(&self) -> (f64, f64) {
        (
            parse_price(&self.price_in).unwrap_or(0.0),
            parse_price(&self.price_out).unwrap_or(0.0),
        )
    }
}

// Guarded by the Redis lock, not a mutex: read on every hit, and only ever touched by the
// main thread or a thread holding the lock (the type system asks for proof of either).
static STRINGS: LazyLock<RedisGILGuard<Strings>> = LazyLock::new(|| {
    RedisGILGuard::new(Strings {
        backend_url: BACKEND_URL.default.into(),
        model: MODEL.default.into(),
        system_prompt: SYSTEM_PROMPT.default.into(),
        api_key_file: API_KEY_FILE.default.into(),
        price_in: PRICE_IN.default.into(),
        price_out: PRICE_OUT.default.into(),
        ca_file: BACKEND_CA_FILE.default.into(),
        embed_url: EMBED_URL.default.into(),
        embed_model: EMBED_MODEL.default.into(),
        threshold: SEMANTIC_THRESHOLD.default.into(),
        rerank_url: RERANK_URL.default.into(),
        rerank_model: RERANK_MODEL.default.into(),
        verify_threshold: SEMANTIC_VERIFY_THRESHOLD.default.into(),
        audit_rate: SEMANTIC_AUDIT_RATE.default.into(),
        target_precision: SEMANTIC_TARGET_PRECISION.default.into(),
        context_template: CONTEXT_TEMPLATE.default.into(),
        default_prefix: keys::prefix_state(MODEL.default, SYSTEM_PROMPT.default),
        prefix_epoch: 0,
    })
});

/// Runs `f` on the string settings, for a caller holding the Redis lock (`ctx`).
pub fn with_strings<G: RedisLockIndicator, R>(ctx: &G, f: impl FnOnce(&mut Strings) -> R) -> R {
    f(&mut STRINGS.lock(ctx))
}

impl StrSetting {
    fn read(&self, s: &Strings) -> String {
        match self.id {
            StrId::BackendUrl => s.backend_url.clone(),
            StrId::Model => s.model.clone(),
            StrId::SystemPrompt => s.system_prompt.clone(),
            StrId::ApiKeyFile => s.api_key_file.clone(),
            StrId::PriceIn => s.price_in.clone(),
            StrId::PriceOut => s.price_out.clone(),
            StrId::CaFile => s.ca_file.clone(),
            StrId::EmbedUrl => s.embed_url.clone(),
            StrId::EmbedModel => s.embed_model.clone(),
            StrId::Threshold => s.threshold.clone(),
            StrId::RerankUrl => s.rerank_url.clone(),
            StrId::RerankModel => s.rerank_model.clone(),
            StrId::VerifyThreshold => s.verify_threshold.clone(),
            StrId::AuditRate => s.audit_rate.clone(),
            StrId::TargetPrecision => s.target_precision.clone(),
            StrId::ContextTemplate => s.context_template.clone(),
        }
    }

    fn validate(&self, v: &str) -> Result<(), &'static str> {
        let ok = match self.id {
            StrId::BackendUrl | StrId::EmbedUrl | StrId::RerankUrl => valid_url(v),
            StrId::Model | StrId::EmbedModel | StrId::RerankModel => valid_model(v),
            StrId::Threshold
            | StrId::VerifyThreshold
            | StrId::AuditRate
            | StrId::TargetPrecision => crate::semantic::parse_threshold(v).is_some(),
            StrId::SystemPrompt => valid_system(v),
            StrId::PriceIn | StrId::PriceOut => parse_price(v).is_some(),
            StrId::ApiKeyFile | StrId::CaFile => valid_path(v),
            StrId::ContextTemplate => valid_context_template(v),
        };
        if ok {
            Ok(())
        } else {
            Err(match self.id {
                StrId::BackendUrl | StrId::EmbedUrl | StrId::RerankUrl => error::CFG_URL,
                StrId::Model | StrId::EmbedModel | StrId::RerankModel => error::CFG_MODEL,
                StrId::Threshold
                | StrId::VerifyThreshold
                | StrId::AuditRate
                | StrId::TargetPrecision => error::CFG_THRESHOLD,
                StrId::PriceIn | StrId::PriceOut => error::CFG_PRICE,
                StrId::ApiKeyFile | StrId::CaFile => error::CFG_PATH,
                StrId::SystemPrompt => error::CFG_SYSTEM,
                StrId::ContextTemplate => error::CFG_CONTEXT_TEMPLATE,
            })
        }
    }
}

impl ConfigurationValue<RedisString> for StrSetting {
    fn get(&self, ctx: &ConfigurationContext) -> RedisString {
        let v = with_strings(ctx, |s| self.read(s));
        RedisString::create(None, v.as_str())
    }

    fn set(&self, ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let v = val
            .try_as_str()
            .map_err(|_| RedisError::Str(error::CFG_UTF8))?
            .to_string();
        self.validate(&v).map_err(RedisError::Str)?;
        with_strings(ctx, |s| {
            match self.id {
                StrId::BackendUrl => s.backend_url = v,
                StrId::Model => s.model = v,
                StrId::SystemPrompt => s.system_prompt = v,
                StrId::ApiKeyFile => s.api_key_file = v,
                StrId::PriceIn => s.price_in = v,
                StrId::PriceOut => s.price_out = v,
                StrId::CaFile => s.ca_file = v,
                StrId::EmbedUrl => s.embed_url = v,
                StrId::EmbedModel => s.embed_model = v,
                StrId::Threshold => s.threshold = v,
                StrId::RerankUrl => s.rerank_url = v,
                StrId::RerankModel => s.rerank_model = v,
                StrId::VerifyThreshold => s.verify_threshold = v,
                StrId::AuditRate => s.audit_rate = v,
                StrId::TargetPrecision => s.target_precision = v,
                StrId::ContextTemplate => s.context_template = v,
            }
            if matches!(self.id, StrId::Model | StrId::SystemPrompt) {
                s.default_prefix = keys::prefix_state(&s.model, &s.system_prompt);
                s.prefix_epoch += 1;
                keys::derivation_changed();
            }
        });
        Ok(())
    }
}

/// What a worker needs for one backend call, copied on the main thread.
pub fn call_settings<G: RedisLockIndicator>(ctx: &G) -> CallSettings {
    let (url, api_key_file, ca_file) = with_strings(ctx, |s| {
        (
            s.backend_url.clone(),
            s.api_key_file.clone(),
            s.ca_file.clone(),
        )
    });
    CallSettings {
        url,
        format: BACKEND_FORMAT.get().into(),
        api_key_file,
        ca_file,
        connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS.get().max(1) as u64),
        max_answer_bytes: MAX_ANSWER_BYTES.get().max(0) as u64,
        retries: BACKEND_RETRIES.get().clamp(0, 10) as u32,
    }
}

/// What a worker needs for the semantic tier, copied on the main thread.
#[derive(Debug, Clone)]
pub struct SemanticSettings {
    /// Where embeddings are posted (`qa.embed-url`, else the backend URL), with the same
    /// key, CA file and timeouts as the backend.
    pub embed: CallSettings,
    pub embed_model: String,
    pub threshold: f32,
    pub guards: bool,
    /// The check after the index search (`qa.semantic-verify`).
    pub verify: VerifyMode,
    /// Where `rerank` posts (`qa.rerank-url`), with the backend's key, CA file and timeouts.
    pub rerank: CallSettings,
    pub rerank_model: String,
    /// The least `relevance_score` a reranked match needs.
    pub verify_threshold: f32,
    /// The share of semantic hits audited (`qa.semantic-audit-rate`).
    pub audit_rate: f64,
    /// `qa.semantic-target-precision` (0: no calibration).
    pub target_precision: f64,
}

pub fn semantic_settings<G: RedisLockIndicator>(
    ctx: &G,
    backend: &CallSettings,
) -> SemanticSettings {
    let (url, model, threshold) = with_strings(ctx, |s| {
        (
            s.embed_url.clone(),
            s.embed_model.clone(),
            crate::semantic::parse_threshold(&s.threshold),
        )
    });
    let decimal = |v: &str, default: &str| {
        crate::semantic::parse_threshold(v)
            .or_else(|| crate::semantic::parse_threshold(default))
            .unwrap_or(0.0)
    };
    let (rerank_url, rerank_model, verify_threshold, audit_rate, target_precision) =
        with_strings(ctx, |s| {
            (
                s.rerank_url.clone(),
                s.rerank_model.clone(),
                decimal(&s.verify_threshold, SEMANTIC_VERIFY_THRESHOLD.default),
                decimal(&s.audit_rate, SEMANTIC_AUDIT_RATE.default),
                decimal(&s.target_precision, SEMANTIC_TARGET_PRECISION.default),
            )
        });
    let mut rerank = backend.clone();
    rerank.url = rerank_url;
    let mut embed = backend.clone();
    if !url.is_empty() {
        embed.url = url;
    } else if backend.format != crate::backend::Format::OpenAi {
        // Anthropic and webhook backends serve no `/embeddings`: without `qa.embed-url`
        // nothing is called (the request takes the exact path, counted in `embed_errors`).
        embed.url.clear();
    }
    SemanticSettings {
        embed,
        embed_model: model,
        // Validated on CONFIG SET; the default if it somehow is not.
        threshold: threshold
            .or_else(|| crate::semantic::parse_threshold(DEFAULT_THRESHOLD))
            .unwrap_or(1.0),
        guards: SEMANTIC_GUARDS.get(),
        verify: SEMANTIC_VERIFY.get(),
        rerank,
        rerank_model,
        verify_threshold,
        audit_rate: audit_rate as f64,
        target_precision: target_precision as f64,
    }
}

/// The circuit breaker's settings now.
pub fn breaker_settings() -> breaker::Settings {
    breaker::Settings {
        failures: BREAKER_FAILURES.get().clamp(0, u32::MAX as i64) as u32,
        cooldown: Duration::from_millis(BREAKER_COOLDOWN_MS.get().max(1) as u64),
        // A probe's job cannot outlive its askers' deadline (qa.timeout-ms) by more than the
        // write back on the main thread: past this it was lost.
        probe_timeout: Duration::from_millis(TIMEOUT_MS.get().max(0) as u64 + 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_bounds() {
        for s in [
            &TTL,
            &STALE_TTL,
            &TIMEOUT_MS,
            &CONNECT_TIMEOUT_MS,
            &MAX_INFLIGHT,
            &MAX_QUEUE,
            &MAX_QUESTION_BYTES,
            &MAX_ANSWER_BYTES,
            &MAX_TOKENS,
            &BACKEND_RETRIES,
            &BREAKER_FAILURES,
            &BREAKER_COOLDOWN_MS,
            &MAX_CONTEXT_BYTES,
        ] {
            assert!(s.min <= s.default && s.default <= s.max, "{}", s.name);
        }
    }

    #[test]
    fn urls() {
        // (url, accepted)
        let rows = [
            ("", true),
            ("http://127.0.0.1:8080/v1", true),
            ("https://api.openai.com/v1", true),
            ("ftp://x", false),
            ("127.0.0.1:8080", false),
            ("http://a b", false),
            ("http://a\nb", false),
        ];
        for (u, ok) in rows {
            assert_eq!(valid_url(u), ok, "{u}");
        }
    }

    #[test]
    fn prices() {
        // (value, parsed)
        let rows = [
            ("0", Some(0.0)),
            ("0.15", Some(0.15)),
            ("10", Some(10.0)),
            ("", None),
            ("-1", None),
            ("1e3", None),
            ("inf", None),
            ("NaN", None),
            ("1.2.3", None),
        ];
        for (v, want) in rows {
            assert_eq!(parse_price(v), want, "{v}");
        }
    }

    #[test]
    fn context_templates() {
        assert!(valid_context_template(CONTEXT_TEMPLATE.default));
        assert!(valid_context_template("{context}"));
        assert!(!valid_context_template("{question} only"));
        assert!(!valid_context_template(&format!(
            "{{context}}{}",
            "x".repeat(65536)
        )));
    }

    #[test]
    fn models() {
        assert!(valid_model("gpt-4o-mini"));
        assert!(valid_model("llama3.1:8b"));
        assert!(!valid_model(""));
        assert!(!valid_model("a\nb"));
        assert!(valid_model(&"m".repeat(256)));
        assert!(!valid_model(&"m".repeat(257)));
    }
}
