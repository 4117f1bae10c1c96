//! Compiles `proto/` into Rust (tonic + prost) and descriptor sets for server reflection
//! (one for `orders.v1`, one each for `inventory.v1`, `payments.v1` and
//! `fulfilment.v1`),
//! and the benchmark's echo service from `bench/proto/`.
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust that carries
//! the well-known types (`google/protobuf/*.proto`), so the build needs neither `protoc` nor
//! any include files from the operating system.
//!
//! It also records the git commit being built as `ORDERS_GIT_SHA` (for
//! `orders_build_info`): the `ORDERS_GIT_SHA` variable when set (image
//! builds without `.git`), else `git rev-parse`, else `unknown`.

use std::{env, fs, path::Path};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = env::var("OUT_DIR")?;
    compile(
        &[
            "proto/orders/v1/types.proto",
            "proto/orders/v1/events.proto",
            "proto/orders/v1/commands.proto",
            "proto/orders/v1/queries.proto",
        ],
        "proto",
        &Path::new(&out_dir).join("orders_descriptor.bin"),
    )?;
    // The fulfilment saga's two services; each server reflects only its own set.
    compile(
        &["proto/inventory/v1/inventory.proto"],
        "proto",
        &Path::new(&out_dir).join("inventory_descriptor.bin"),
    )?;
    compile(
        &["proto/payments/v1/payments.proto"],
        "proto",
        &Path::new(&out_dir).join("payments_descriptor.bin"),
    )?;
    compile(
        &["proto/fulfilment/v1/fulfilment.proto"],
        "proto",
        &Path::new(&out_dir).join("fulfilment_descriptor.bin"),
    )?;
    // The benchmark's echo reference server (orders-bench); not part of the API.
    compile(
        &["bench/proto/echo.proto"],
        "bench/proto",
        &Path::new(&out_dir).join("echo_descriptor.bin"),
    )?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=bench/proto");
    git_sha();
    Ok(())
}

/// Sets `ORDERS_GIT_SHA` for the crate and reruns when HEAD moves.
fn git_sha() {
    println!("cargo:rerun-if-env-changed=ORDERS_GIT_SHA");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let sha = env::var("ORDERS_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Every commit and checkout appends to the HEAD log.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
    }
    println!("cargo:rustc-env=ORDERS_GIT_SHA={sha}");
}

/// Parses `files` (resolved against `include`), writes their descriptor set to `descriptor`
/// for reflection, and generates the messages and the tonic services into `OUT_DIR`.
fn compile(
    files: &[&str],
    include: &str,
    descriptor: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let set = protox::compile(files, [include])?;
    fs::write(descriptor, set.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(set)?;
    Ok(())
}
