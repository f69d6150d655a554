//! The network half of a backend call. Runs on worker threads only, never under the Redis
//! lock.

use std::sync::OnceLock;
use std::time::Duration;

use super::{excerpt, Answer, BackendError, Request, WireFormat};

/// What a worker needs to make one call; copied out of the config when the job is made.
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub url: String,
    pub api_key_file: String,
    pub connect_timeout: Duration,
    pub max_answer_bytes: u64,
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            // Error statuses are read so their body can be quoted in the error reply.
            .http_status_as_error(false)
            .user_agent(concat!("redis-qa/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    })
}

/// The API key: the file named by `qa.api-key-file` if set, else `QA_API_KEY`. Read per
/// call (on a worker), so a rotated key file takes effect without a restart.
fn api_key(settings: &CallSettings) -> Result<String, BackendError> {
    if settings.api_key_file.is_empty() {
        return Ok(std::env::var("QA_API_KEY")
            .unwrap_or_default()
            .trim()
            .to_string());
    }
    std::fs::read_to_string(&settings.api_key_file)
        .map(|s| s.trim().to_string())
        .map_err(|e| BackendError::ApiKey(e.kind().to_string()))
}

/// Calls the backend, giving up when `budget` runs out.
pub fn call(
    format: &dyn WireFormat,
    settings: &CallSettings,
    req: &Request,
    budget: Duration,
) -> Result<Answer, BackendError> {
    if settings.url.is_empty() {
        return Err(BackendError::NotConfigured);
    }
    let timeout_ms = budget.as_millis() as u64;
    if budget.is_zero() {
        return Err(BackendError::Timeout(0));
    }
    let key = api_key(settings)?;
    let url = format!("{}{}", settings.url.trim_end_matches('/'), format.path());
    let mut builder = agent()
        .post(&url)
        .config()
        .timeout_global(Some(budget))
        .timeout_connect(Some(settings.connect_timeout.min(budget)))
        .build()
        .header("Content-Type", "application/json");
    for (name, value) in format.headers(&key) {
        builder = builder.header(name, value);
    }
    let map_err = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => BackendError::Timeout(timeout_ms),
        ureq::Error::BodyExceedsLimit(n) => BackendError::TooLarge(n),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            BackendError::Timeout(timeout_ms)
        }
        ureq::Error::Io(io) => BackendError::Unreachable(io.kind().to_string()),
        ureq::Error::ConnectionFailed => BackendError::Unreachable("connection failed".into()),
        ureq::Error::HostNotFound => BackendError::Unreachable("host not found".into()),
        ureq::Error::BadUri(_) => BackendError::Unreachable("bad URL".into()),
        // Other ureq errors name protocol details, never the request's headers.
        other => BackendError::Unreachable(other.to_string().replace(&key, "[redacted]")),
    };
    let mut resp = builder.send(format.request_body(req)).map_err(map_err)?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(settings.max_answer_bytes)
        .read_to_vec()
        .map_err(map_err)?;
    if !(200..300).contains(&status) {
        return Err(BackendError::Status {
            code: status,
            excerpt: excerpt(&body, &key),
        });
    }
    format.parse_reply(&body)
}
