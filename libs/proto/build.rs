//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed)
//! and generates tonic servers and clients plus a descriptor set for server
//! reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "skileez/call/v1/call.proto",
    "skileez/contract/v1/contract.proto",
    "skileez/notifications/v1/notifications.proto",
    "skileez/scheduling/v1/availability.proto",
    "skileez/scheduling/v1/scheduling.proto",
    "skileez/user/v1/user.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build script compiled in one clone
    // may be reused by another clone sharing the target folder.
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("skileez_descriptor.bin"),
        prost::Message::encode_to_vec(&files),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(files)?;
    Ok(())
}
