#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tqx_fuzz::json_command::run(data));
