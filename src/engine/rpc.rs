//! llama.cpp's RPC backend (ggml-rpc), for split serving: a worker runs an RPC server that
//! lends its devices (a GPU, else the CPU and its RAM); the host registers the workers' servers
//! and loads a model whose last layers live on them.
//!
//! llama-cpp-2 has no bindings for ggml-rpc (and does not re-export its sys crate), so the few
//! C functions used are declared here (`ggml-rpc.h`, `ggml-backend.h`, `llama.h`; the library
//! is built with `GGML_RPC=ON`, see `.cargo/config.toml`, and linked by llama-cpp-sys-2).
//!
//! Both sides run in child processes of the node, never in the node itself:
//! `ggml_backend_rpc_start_server` never returns, trusts every byte its client sends, and
//! llama.cpp's RPC client aborts the whole process when a server vanishes or answers badly.
//! The server only ever listens on a loopback address the node picked; peers reach it through
//! the node's `mesh/rpc/1` streams (docs/SECURITY.md).

use std::ffi::{c_char, c_uint, c_void, CString};

use super::EngineError;

/// `ggml_backend_dev_t` and `ggml_backend_reg_t`: opaque handles.
type DevT = *mut c_void;
type RegT = *mut c_void;
/// `enum ggml_backend_dev_type` values (ggml-backend.h).
const DEVICE_TYPE_CPU: c_uint = 0;
const DEVICE_TYPE_GPU: c_uint = 1;

extern "C" {
    fn llama_supports_rpc() -> bool;
    fn ggml_backend_dev_count() -> usize;
    fn ggml_backend_dev_get(index: usize) -> DevT;
    fn ggml_backend_dev_type(device: DevT) -> c_uint;
    fn ggml_backend_dev_by_type(kind: c_uint) -> DevT;
    fn ggml_backend_register(reg: RegT);
    fn ggml_backend_rpc_start_server(
        endpoint: *const c_char,
        cache_dir: *const c_char,
        n_threads: usize,
        n_devices: usize,
        devices: *mut DevT,
    );
    fn ggml_backend_rpc_add_server(endpoint: *const c_char) -> RegT;
}

/// Whether this build has the RPC backend.
pub fn supported() -> bool {
    // SAFETY: a plain query without arguments.
    unsafe { llama_supports_rpc() }
}

/// Serves this machine's devices over llama.cpp's RPC protocol on `endpoint` (`127.0.0.1:PORT`)
/// until the process ends: the GPUs if there are any, else the CPU. Returns only when the
/// server could not start (bad endpoint, port taken). Call it in a process of its own.
pub fn serve_forever(endpoint: &str, threads: usize) -> Result<(), EngineError> {
    if !supported() {
        return Err(EngineError::Load(
            "this build has no llama.cpp RPC backend (GGML_RPC)".into(),
        ));
    }
    super::backend()?;
    let mut devices = lendable_devices();
    if devices.is_empty() {
        return Err(EngineError::Load("no device to lend".into()));
    }
    let endpoint = CString::new(endpoint)
        .map_err(|_| EngineError::BadInput("endpoint has a NUL byte".into()))?;
    // SAFETY: the endpoint is a valid C string and `devices` holds `len` valid device handles
    // from ggml's registry; both outlive the call (which normally never returns).
    unsafe {
        ggml_backend_rpc_start_server(
            endpoint.as_ptr(),
            std::ptr::null(),
            threads.max(1),
            devices.len(),
            devices.as_mut_ptr(),
        );
    }
    Err(EngineError::Load(format!(
        "the RPC server on {} stopped (port taken?)",
        endpoint.to_string_lossy()
    )))
}

/// The GPUs (and other non-CPU accelerators) of this machine, else the CPU.
fn lendable_devices() -> Vec<DevT> {
    // SAFETY: registry queries; the handles live as long as the process.
    unsafe {
        let gpus: Vec<_> = (0..ggml_backend_dev_count())
            .map(|i| ggml_backend_dev_get(i))
            .filter(|&d| !d.is_null() && ggml_backend_dev_type(d) == DEVICE_TYPE_GPU)
            .collect();
        if !gpus.is_empty() {
            return gpus;
        }
        let cpu = ggml_backend_dev_by_type(DEVICE_TYPE_CPU);
        if cpu.is_null() {
            Vec::new()
        } else {
            vec![cpu]
        }
    }
}

/// Registers the RPC servers at `endpoints` (`127.0.0.1:PORT` each) and returns the backend
/// device indices their devices got, in order, for `LlamaModelParams::with_devices`.
/// Contacting a server that is not there aborts the process (llama.cpp): only in a child.
pub fn add_servers(endpoints: &[String]) -> Result<Vec<usize>, EngineError> {
    if !supported() {
        return Err(EngineError::Load(
            "this build has no llama.cpp RPC backend (GGML_RPC)".into(),
        ));
    }
    let mut indices = Vec::new();
    for endpoint in endpoints {
        let c = CString::new(endpoint.as_str())
            .map_err(|_| EngineError::BadInput("endpoint has a NUL byte".into()))?;
        // SAFETY: a valid C string; the registry keeps what it registers.
        let before = unsafe { ggml_backend_dev_count() };
        let reg = unsafe { ggml_backend_rpc_add_server(c.as_ptr()) };
        if !reg.is_null() {
            // SAFETY: a registry handle just returned by ggml-rpc, registered once.
            unsafe { ggml_backend_register(reg) };
        }
        let after = unsafe { ggml_backend_dev_count() };
        if reg.is_null() || after <= before {
            return Err(EngineError::Load(format!(
                "the RPC server at {endpoint} lends no device"
            )));
        }
        indices.extend(before..after);
    }
    Ok(indices)
}
