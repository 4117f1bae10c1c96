//! `orderctl`: the admin CLI.

fn main() {}
