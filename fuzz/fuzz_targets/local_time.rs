//! See `fuzz/README.md` and `skileez_fuzz::local_time`.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: skileez_fuzz::write_seeds(skileez_fuzz::seeds::local_time()),
    |data: &[u8]| skileez_fuzz::local_time::run(data)
);
