//! Compiles `proto/` into Rust (tonic + prost) and a descriptor set for server reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/orders/v1/types.proto",
        "proto/orders/v1/events.proto",
        "proto/orders/v1/commands.proto",
        "proto/orders/v1/queries.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("orders_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
