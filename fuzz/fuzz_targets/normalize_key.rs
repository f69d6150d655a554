#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| redis_qa_fuzz::normalize_key(data));
