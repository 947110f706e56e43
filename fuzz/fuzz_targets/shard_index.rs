#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tunelab_fuzz::shard_index(data));
