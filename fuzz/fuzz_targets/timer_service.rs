//! See `fuzz/README.md` and `skileez_fuzz::scheduling`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: skileez_fuzz::write_seeds(skileez_fuzz::seeds::timer_service()),
    |data: &[u8]| skileez_fuzz::scheduling::timer_service(data)
);
