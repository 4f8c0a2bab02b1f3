//! How much memory this machine has for a model: GPU memory when a GPU back end is compiled in
//! and a device is present, else system RAM minus a reserve. The probing lives here; the
//! decision is the pure [`room_for_model`].

/// What the machine reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryProbe {
    /// Free memory summed over GPU devices, when any GPU device is present.
    pub gpu_free: Option<u64>,
    /// Total system RAM in bytes (0 when unknown).
    pub system_total: u64,
}

/// RAM kept for the OS and other programs: 10% of it, at least 1 GiB, at most 8 GiB.
pub fn system_reserve(total: u64) -> u64 {
    const GIB: u64 = 1024 * 1024 * 1024;
    (total / 10).clamp(GIB, 8 * GIB).min(total)
}

/// GPU memory if there is a GPU, else system RAM minus [`system_reserve`].
pub fn room_for_model(probe: &MemoryProbe) -> u64 {
    match probe.gpu_free {
        Some(gpu) if gpu > 0 => gpu,
        _ => probe
            .system_total
            .saturating_sub(system_reserve(probe.system_total)),
    }
}

/// Environment variable that sets the bytes available for models instead of probing: to keep
/// memory back for other programs, and for tests (a model that "does not fit" one node).
pub const MEMORY_ENV: &str = "MESH_MEMORY_BYTES";

/// Bytes available for a model on this machine (see [`room_for_model`]), or [`MEMORY_ENV`]
/// when it is set to a number.
pub fn available_memory() -> u64 {
    match std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        Some(bytes) => bytes,
        None => room_for_model(&probe()),
    }
}

/// Asks llama.cpp's device registry (GPU devices exist only when a GPU back end is compiled
/// in) and the OS.
pub fn probe() -> MemoryProbe {
    use llama_cpp_2::LlamaBackendDeviceType as T;
    let devices = llama_cpp_2::list_llama_ggml_backend_devices();
    let gpus: Vec<_> = devices
        .iter()
        .filter(|d| matches!(d.device_type, T::Gpu | T::IntegratedGpu | T::Accelerator))
        .collect();
    let gpu_free = (!gpus.is_empty()).then(|| gpus.iter().map(|d| d.memory_free as u64).sum());
    let cpu_total = devices
        .iter()
        .filter(|d| matches!(d.device_type, T::Cpu))
        .map(|d| d.memory_total as u64)
        .max()
        .unwrap_or(0);
    let system_total = if cpu_total > 0 {
        cpu_total
    } else {
        crate::util::sysinfo::total_memory().unwrap_or(0)
    };
    MemoryProbe {
        gpu_free,
        system_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn gpu_memory_wins_when_present() {
        let probe = MemoryProbe {
            gpu_free: Some(24 * GIB),
            system_total: 64 * GIB,
        };
        assert_eq!(room_for_model(&probe), 24 * GIB);
    }

    #[test]
    fn system_ram_minus_reserve_without_gpu() {
        let probe = MemoryProbe {
            gpu_free: None,
            system_total: 32 * GIB,
        };
        assert_eq!(room_for_model(&probe), 32 * GIB - 32 * GIB / 10);
        let tiny = MemoryProbe {
            gpu_free: None,
            system_total: GIB / 2,
        };
        assert_eq!(room_for_model(&tiny), 0);
    }

    #[test]
    fn probe_reports_some_system_memory() {
        assert!(probe().system_total > 0);
    }
}
