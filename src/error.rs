//! Every error message the module replies with, in one place, so tests and docs can quote
//! them exactly. Replies are `ERR <message>`; messages are lowercase with no trailing period.

pub const SYNTAX: &str = "ERR syntax error";
pub const UNKNOWN_OPTION_GET: &str =
    "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, WITHMETA, SEMANTIC or EXACT)";
pub const STALE_RANGE: &str = "ERR STALE must be an integer between 0 and 315360000 seconds";
pub const UNKNOWN_OPTION_SET: &str =
    "ERR unknown option (expected TTL, MODEL, SYSTEM, CONTEXT, SOURCES, SEMANTIC or EXACT)";
pub const SEMANTIC_AND_EXACT: &str = "ERR SEMANTIC and EXACT are mutually exclusive";
pub const UNKNOWN_OPTION_LOOKUP: &str = "ERR unknown option (expected MODEL or SYSTEM)";
pub const GENERATION_TYPE: &str =
    "WRONGTYPE the cache's generation key (qa:{<cache>}:gen) does not hold a string";
pub const ANSWER_EMPTY: &str = "ERR answer is empty";
pub const ANSWER_TOO_LONG: &str = "ERR answer is longer than qa.max-answer-bytes";
pub const STATS_ARITY: &str = "ERR QA.STATS takes at most one cache name";
pub const RESETSTATS_ARITY: &str = "ERR QA.RESETSTATS takes at most one cache name";
pub const AUDIT_COUNT: &str = "ERR COUNT must be an integer between 1 and 32";
pub const CFG_PRICE: &str = "must be a non-negative decimal number, e.g. 0.15";
pub const OPTION_TWICE: &str = "ERR option given twice";
pub const CACHE_EMPTY: &str = "ERR cache name is empty";
pub const CACHE_TOO_LONG: &str = "ERR cache name is longer than 128 bytes";
pub const CACHE_BRACE: &str = "ERR cache name must not contain '{' or '}'";
pub const QUESTION_EMPTY: &str = "ERR question is empty";
pub const QUESTION_TOO_LONG: &str = "ERR question is longer than qa.max-question-bytes";
pub const QUESTION_UTF8: &str = "ERR question is not valid UTF-8";
pub const TTL_RANGE: &str = "ERR TTL must be an integer between 1 and 315360000 seconds";
pub const MODEL_INVALID: &str =
    "ERR MODEL must be 1 to 256 bytes of UTF-8 without control characters";
pub const SYSTEM_INVALID: &str = "ERR SYSTEM must be valid UTF-8 of at most 65536 bytes";
pub const IN_MULTI: &str =
    "ERR cache miss inside MULTI or a script: QA.GET cannot wait for the backend there";
pub const ON_REPLICA: &str = "ERR cache miss on a read-only replica: send QA.GET to the primary";
pub const UNKNOWN_OPTION_STREAM: &str =
    "ERR unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, SEMANTIC or EXACT)";
pub const STREAM_IN_MULTI: &str =
    "ERR cache miss inside MULTI or a script: QA.STREAM cannot start a backend call there";
pub const STREAM_ON_REPLICA: &str =
    "ERR cache miss on a read-only replica: send QA.STREAM to the primary";
pub const WRONG_ENTRY_TYPE: &str =
    "WRONGTYPE the entry key holds a value that is not a redis-qa entry";
pub const SET_SEMANTIC_IN_MULTI: &str =
    "ERR QA.SET with the semantic tier cannot wait for the embedding inside MULTI or a script (add EXACT)";
pub const SET_PAUSED: &str =
    "ERR writes are paused (CLIENT PAUSE or a failover): the answer was not stored";
pub const SET_NOT_PRIMARY: &str =
    "ERR this server became a replica before the answer was stored: send QA.SET to the primary";
/// Not reached (a closure taken twice); a message rather than a panic all the same.
pub const INTERNAL_GENERATION: &str = "ERR internal error in redis-qa (generation lookup)";
pub const TOKEN_INVALID: &str = "ERR TOKEN must be 1 to 64 printable ASCII characters";
pub const ANSWER_UTF8: &str = "ERR answer is not valid UTF-8";
pub const SOURCES_COUNT: &str = "ERR SOURCES needs a count between 1 and 32, then that many ids";
pub const SOURCE_ID_INVALID: &str =
    "ERR a source id must be 1 to 256 bytes of UTF-8 without control characters";
pub const INVALIDATE_SOURCE_ARITY: &str = "ERR SOURCE needs at least one source id";
pub const SOURCES_SYNTAX: &str = "ERR syntax error (expected QA.SOURCES <cache> <id> [WITHKEYS])";
pub const CONTEXT_TOO_LONG: &str = "ERR CONTEXT is longer than qa.max-context-bytes";
pub const CONTEXT_UTF8: &str = "ERR CONTEXT must be valid UTF-8";
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'";

// Backend failures (without the ERR code; see `BackendError`'s Display).
pub const BACKEND_URL_NOT_SET: &str = "backend URL not set (CONFIG SET qa.backend-url <url>)";
pub const API_KEY_FILE: &str = "cannot read qa.api-key-file";
pub const BACKEND_UNREACHABLE: &str = "backend unreachable";
pub const BACKEND_TIMEOUT: &str = "backend timeout";
pub const BACKEND_STATUS: &str = "backend returned HTTP";
pub const BACKEND_TOO_LARGE: &str = "backend reply larger than";
pub const BACKEND_MALFORMED: &str = "backend reply malformed";
pub const BACKEND_EMPTY: &str = "backend reply has no answer";
pub const BUSY: &str = "too many misses waiting for the backend (qa.max-queue)";
pub const BREAKER_OPEN: &str =
    "backend circuit breaker open after repeated failures (next try after qa.breaker-cooldown-ms)";
pub const CA_FILE: &str = "cannot read qa.backend-ca-file";
pub const INTERNAL: &str = "internal error in redis-qa (see the server log)";

// Config validation (CONFIG SET replies `ERR CONFIG SET failed ... - <message>`).
pub const CFG_URL: &str = "must be empty or an http:// or https:// URL without spaces";
pub const CFG_MODEL: &str = "must be 1 to 256 bytes of UTF-8 without control characters";
pub const CFG_SYSTEM: &str = "must be valid UTF-8 of at most 65536 bytes";
pub const CFG_UTF8: &str = "must be valid UTF-8";
pub const CFG_THRESHOLD: &str = "must be a decimal number between 0 and 1, e.g. 0.90";
pub const CFG_PATH: &str = "must be a path without control characters";
pub const CFG_CONTEXT_TEMPLATE: &str =
    "must be valid UTF-8 of at most 65536 bytes containing {context}";
pub const OPTION_VALUE: &str = "ERR option needs a value";
