#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| warden_testkit::fuzzing::policy_file(data));
