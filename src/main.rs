//! The `pos-profile-sync` binary: the subcommands of the contract (section 2), still to come.
fn main() {}
