//! The echo reference server: a tonic server with no work behind its one RPC,
//! built in the same profile as the servers it is compared with. ghz and
//! orders-bench measure it to give the cost of a gRPC round trip here.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

pub mod proto {
    tonic::include_proto!("bench.echo.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("echo_descriptor");
}

struct EchoService;

#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: Request<proto::EchoRequest>,
    ) -> Result<Response<proto::EchoResponse>, Status> {
        Ok(Response::new(proto::EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

/// Serves Echo (and reflection) on `addr` until Ctrl-C or SIGTERM.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    eprintln!("echo server on {addr}");
    tonic::transport::Server::builder()
        .add_service(proto::echo_server::EchoServer::new(EchoService))
        .add_service(reflection)
        .serve_with_shutdown(addr, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await?;
    Ok(())
}
