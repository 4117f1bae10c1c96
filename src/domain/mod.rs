//! The pure order domain: validated values, the order aggregate, and the
//! `decide` / `evolve` functions. It performs no I/O and imports no I/O crate;
//! every fact a decision needs is passed in.

pub mod order;
pub mod types;

pub use order::*;
pub use types::*;

#[cfg(test)]
mod tests;
