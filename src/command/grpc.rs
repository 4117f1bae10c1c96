//! The `orders.v1.OrderCommands` gRPC edge: parses each request into a
//! validated command, hands it to the writer and maps the answer.

use tonic::{Request, Response, Status};

use super::{
    CommandError,
    writer::{Accepted, RequestMeta, Writer},
};
use crate::{
    auth::Caller, codec::ParsedCommand, domain::Command, limits::correlation, proto, telemetry,
};

/// The `OrderCommands` service.
pub struct CommandService {
    writer: Writer,
}

impl CommandService {
    /// A service submitting to `writer`.
    pub fn new(writer: Writer) -> Self {
        Self { writer }
    }

    async fn execute<R>(&self, rpc: &'static str, request: Request<R>) -> Result<Accepted, Status>
    where
        R: prost::Message,
        for<'a> ParsedCommand: TryFrom<&'a R, Error = crate::codec::InvalidRequest>,
    {
        // Checked here too, not only in the edge layer: they are stored with the events.
        let correlation = correlation::read(request.metadata().as_ref())?;
        // The events carry this RPC's span when spans are exported (so the
        // relay and the projector continue its trace), else the caller's.
        let traceparent =
            telemetry::traceparent_of(&tracing::Span::current()).or(correlation.traceparent);
        let meta = RequestMeta {
            x_request_id: correlation.request_id,
            traceparent,
            caller: Caller::of(&request).cloned(),
        };
        let request = request.into_inner();
        let parsed = ParsedCommand::try_from(&request).map_err(CommandError::from)?;
        if let (Some(confined), Command::PlaceOrder { customer_id, .. }) = (
            meta.caller.as_ref().and_then(|c| c.customer_id.as_ref()),
            &parsed.command,
        ) && confined != customer_id
        {
            return Err(CommandError::PermissionDenied(
                "the token may place orders only for its own customer_id",
            )
            .into());
        }
        tracing::Span::current().record("order_id", tracing::field::display(parsed.order_id));
        let result = self.writer.submit(rpc, parsed, &request, meta).await;
        match &result {
            Ok(accepted) => tracing::debug!(rpc, version = accepted.version, "accepted"),
            Err(error) => tracing::info!(rpc, %error, "refused"),
        }
        Ok(result?)
    }
}

/// Builds a response that carries the order id and version.
fn respond<T>(accepted: Accepted, build: impl FnOnce(String, u64) -> T) -> Response<T> {
    Response::new(build(accepted.order_id.to_string(), accepted.version))
}

#[tonic::async_trait]
impl proto::order_commands_server::OrderCommands for CommandService {
    async fn place_order(
        &self,
        request: Request<proto::PlaceOrderRequest>,
    ) -> Result<Response<proto::PlaceOrderResponse>, Status> {
        let accepted = self.execute("PlaceOrder", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::PlaceOrderResponse { order_id, version }
        }))
    }

    async fn add_order_line(
        &self,
        request: Request<proto::AddOrderLineRequest>,
    ) -> Result<Response<proto::AddOrderLineResponse>, Status> {
        let accepted = self.execute("AddOrderLine", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::AddOrderLineResponse { order_id, version }
        }))
    }

    async fn remove_order_line(
        &self,
        request: Request<proto::RemoveOrderLineRequest>,
    ) -> Result<Response<proto::RemoveOrderLineResponse>, Status> {
        let accepted = self.execute("RemoveOrderLine", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::RemoveOrderLineResponse { order_id, version }
        }))
    }

    async fn confirm_order(
        &self,
        request: Request<proto::ConfirmOrderRequest>,
    ) -> Result<Response<proto::ConfirmOrderResponse>, Status> {
        let accepted = self.execute("ConfirmOrder", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::ConfirmOrderResponse { order_id, version }
        }))
    }

    async fn ship_order(
        &self,
        request: Request<proto::ShipOrderRequest>,
    ) -> Result<Response<proto::ShipOrderResponse>, Status> {
        let accepted = self.execute("ShipOrder", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::ShipOrderResponse { order_id, version }
        }))
    }

    async fn cancel_order(
        &self,
        request: Request<proto::CancelOrderRequest>,
    ) -> Result<Response<proto::CancelOrderResponse>, Status> {
        let accepted = self.execute("CancelOrder", request).await?;
        Ok(respond(accepted, |order_id, version| {
            proto::CancelOrderResponse { order_id, version }
        }))
    }
}
