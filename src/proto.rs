//! Generated protobuf and gRPC code for `orders.v1`, `inventory.v1`,
//! `payments.v1` and `fulfilment.v1`, included once.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The `orders.v1` package.
pub mod orders {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("orders.v1");
    }
}

/// The `inventory.v1` package (the Inventory service of the fulfilment saga).
pub mod inventory {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("inventory.v1");
    }
}

/// The `payments.v1` package (the stand-in payment provider).
pub mod payments {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("payments.v1");
    }
}

/// The `fulfilment.v1` package (the fulfilment saga's admin service).
pub mod fulfilment {
    /// Version 1 of the contract.
    pub mod v1 {
        tonic::include_proto!("fulfilment.v1");
    }
}

pub use orders::v1::*;

/// Encoded `FileDescriptorSet` of `proto/orders/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("orders_descriptor");
/// Encoded `FileDescriptorSet` of `proto/inventory/`, served by the inventory server's reflection.
pub const INVENTORY_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("inventory_descriptor");
/// Encoded `FileDescriptorSet` of `proto/payments/`, served by the payments server's reflection.
pub const PAYMENTS_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("payments_descriptor");
/// Encoded `FileDescriptorSet` of `proto/fulfilment/`, served by order-fulfilment's reflection.
pub const FULFILMENT_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("fulfilment_descriptor");
/// Every descriptor set of this crate's services (the metrics layer looks methods up in them).
pub const DESCRIPTOR_SETS: [&[u8]; 4] = [
    FILE_DESCRIPTOR_SET,
    INVENTORY_FILE_DESCRIPTOR_SET,
    PAYMENTS_FILE_DESCRIPTOR_SET,
    FULFILMENT_FILE_DESCRIPTOR_SET,
];
