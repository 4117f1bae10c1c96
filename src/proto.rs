//! Generated protobuf and gRPC code for `orders.v1`, included once.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The `orders.v1` package.
pub mod orders {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("orders.v1");
    }
}

pub use orders::v1::*;

/// Encoded `FileDescriptorSet` of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orders_descriptor");
