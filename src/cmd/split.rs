//! The hidden child commands of split serving (`node::split::child` starts them): `mesh
//! rpc-worker` runs llama.cpp's RPC server, `mesh rpc-host` serves a model over RPC devices.
//! Both end when their stdin closes (the node that started them is gone).

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};

use super::args::{RpcHostArgs, RpcWorkerArgs};
use crate::engine::{rpc, EngineConfig};
use crate::node::Node;
use crate::util::signals::CtrlC;

/// Ends the process when stdin reaches its end: the parent node exited.
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        loop {
            match std::io::stdin().read(&mut buf) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

/// `mesh rpc-worker`: blocks in llama.cpp's RPC server.
pub fn rpc_worker(args: RpcWorkerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.endpoint.ip().is_loopback(),
        "the RPC server listens on loopback only"
    );
    exit_with_parent();
    rpc::serve_forever(&args.endpoint.to_string(), args.threads)?;
    Ok(())
}

/// `mesh rpc-host`: a single node (no mesh) on 127.0.0.1 whose engine puts `--gpu-layers`
/// layers on the `--rpc` servers.
pub async fn rpc_host(args: RpcHostArgs) -> anyhow::Result<()> {
    exit_with_parent();
    let mut ctrl_c = CtrlC::listen();
    let cfg = EngineConfig {
        model_name: Some(args.model_name),
        parallel: args.parallel,
        ctx: args.ctx,
        threads: args.threads,
        gpu_layers: args.gpu_layers,
        rpc: args.rpc.iter().map(|a| a.to_string()).collect(),
        ..EngineConfig::new(args.model)
    };
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let node = Node::start(cfg, local, args.port, 0).await?;
    let _ = ctrl_c.wait().await;
    node.shutdown().await;
    Ok(())
}
