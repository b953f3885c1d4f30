#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| disaster_cloud_fuzz::targets::push_subscribe_body(data));
