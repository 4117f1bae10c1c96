//! Compiles `proto/` into Rust (tonic + prost) and a descriptor set for server reflection,
//! and the benchmark's echo service from `bench/proto/`.

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
    // The benchmark's echo reference server (orders-bench); not part of the API.
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("echo_descriptor.bin"))
        .compile_protos(&["bench/proto/echo.proto"], &["bench/proto"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=bench/proto");
    Ok(())
}
