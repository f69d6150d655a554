#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| redis_qa_fuzz::entry_v2(data));
