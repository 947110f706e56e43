#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tunelab_fuzz::run_spec(data));
