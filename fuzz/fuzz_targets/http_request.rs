#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tqx_fuzz::http_request::run(data));
