//! The process's memory: how the C allocator that librdkafka uses is set up.

/// Call first in `main`, before librdkafka starts.
///
/// librdkafka allocates with the C library's `malloc`, not with jemalloc.
/// Its large buffers (fetch responses, decompressed batches: megabytes each,
/// in waves when a backlog is fetched) start out mapped on their own, but
/// glibc raises its mapping threshold to the size of each one freed, so the
/// next come from its heaps and stay in the process once freed. Fixing the
/// threshold at glibc's default (128 KiB) keeps every large buffer mapped on
/// its own and returned when freed: the pod's peak RSS with a backlog fell by
/// about 12 MiB (`PPS_BENCH_PHASES=rss cargo bench --bench limits`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_c_buffers_at_once() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: `mallopt` sets a parameter of glibc's allocator under the
    // allocator's own lock and touches no memory of ours. It fails only for
    // a threshold above 32 MiB; if it did, glibc's default would stay.
    // Called first so that every buffer librdkafka allocates follows it.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

/// Other C libraries keep their own allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_c_buffers_at_once() {}
