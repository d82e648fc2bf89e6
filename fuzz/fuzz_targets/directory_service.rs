//! See `fuzz/README.md` and `skileez_fuzz::scheduling`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: skileez_fuzz::write_seeds(skileez_fuzz::seeds::directory_service()),
    |data: &[u8]| skileez_fuzz::scheduling::directory_service(data)
);
