//! The `pos-profile-sync` binary: everything is in the library; this only
//! hands the command line to it.

/// jemalloc rather than the system allocator: with a backlog buffered, the
/// pod's peak RSS was 135 MiB against 146 MiB (`PPS_BENCH_PHASES=rss cargo
/// bench --bench limits`), and it gives memory back as the buffer drains.
/// The in-process benches use it too, so they measure what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    pos_profile_sync::ops::memory::return_large_c_buffers_at_once();
    pos_profile_sync::cli::main()
}
