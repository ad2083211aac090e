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
///
/// A threshold set in the environment (`MALLOC_MMAP_THRESHOLD_`, or
/// `mmap_threshold` in `GLIBC_TUNABLES`) is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_c_buffers_at_once() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    let var = |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().into_owned());
    if threshold_set_by(var) {
        return;
    }
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

/// Whether the environment (read through `var`) sets glibc's mapping
/// threshold itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn threshold_set_by(var: impl Fn(&str) -> Option<String>) -> bool {
    var("MALLOC_MMAP_THRESHOLD_").is_some()
        || var("GLIBC_TUNABLES").is_some_and(|tunables| tunables.contains("mmap_threshold"))
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;
    use crate::ops::test_env as env;

    #[test]
    fn a_threshold_from_the_environment_is_left_alone() {
        assert!(threshold_set_by(env(&[(
            "MALLOC_MMAP_THRESHOLD_",
            "65536"
        )])));
        assert!(threshold_set_by(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"
        )])));
    }

    #[test]
    fn otherwise_the_service_sets_it() {
        assert!(!threshold_set_by(env(&[])));
        assert!(!threshold_set_by(env(&[(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2"
        )])));
    }
}
