//! See `fuzz/README.md` and `skileez_fuzz::notifications`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: skileez_fuzz::write_seeds(skileez_fuzz::seeds::notification_service()),
    |data: &[u8]| skileez_fuzz::notifications::notification_service(data)
);
