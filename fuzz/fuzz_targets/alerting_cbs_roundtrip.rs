#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| disaster_cloud_fuzz::targets::alerting_cbs_roundtrip(data));
