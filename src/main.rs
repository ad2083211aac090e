//! The `pos-profile-sync` binary: everything is in the library; this only
//! hands the command line to it.

fn main() -> std::process::ExitCode {
    pos_profile_sync::cli::main()
}
