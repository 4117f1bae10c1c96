//! Order fulfilment: the saga that takes a confirmed order through
//! Inventory, Payments and OrderCommands (`saga`: the pure decisions).

pub mod saga;
