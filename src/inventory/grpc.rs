//! The `inventory.v1.Inventory` gRPC edge: parses each request into
//! validated values (every bad field a violation), calls the store and maps
//! the answer.

use tonic::{Request, Response, Status};

use super::{
    Error,
    domain::{
        Lines, MAX_RESERVATION_LINES, OnHand, Reservation, ReservationId, ReservationState,
        StockLevel,
    },
    store::InventoryStore,
};
use crate::{
    codec::{InvalidRequest, Violations},
    domain::{ProductId, Quantity, TrackingNumber},
    proto::inventory::v1 as pb,
};

/// The `Inventory` service.
pub struct InventoryService {
    store: InventoryStore,
}

impl InventoryService {
    /// A service over `store`.
    pub fn new(store: InventoryStore) -> Self {
        Self { store }
    }
}

/// Parses a reservation key from `field`.
fn reservation_id(violations: &mut Violations, field: &str, raw: &str) -> Option<ReservationId> {
    violations.check(field, ReservationId::parse(raw))
}

/// The key of a request that carries only one.
fn only_key(raw: &str) -> Result<ReservationId, InvalidRequest> {
    let mut violations = Violations::default();
    let id = reservation_id(&mut violations, "reservation_id", raw);
    violations.finish(|| id.expect("checked"))
}

/// A product id request.
fn only_product(raw: &str) -> Result<ProductId, InvalidRequest> {
    let mut violations = Violations::default();
    let id = violations.check("product_id", ProductId::parse(raw));
    violations.finish(|| id.expect("checked"))
}

/// A parsed `SetStock`.
pub fn parse_set_stock(
    request: &pb::SetStockRequest,
) -> Result<(ProductId, OnHand), InvalidRequest> {
    let mut violations = Violations::default();
    let product = violations.check("product_id", ProductId::parse(&request.product_id));
    let on_hand = violations.check("on_hand", OnHand::parse(request.on_hand));
    violations.finish(|| (product.expect("checked"), on_hand.expect("checked")))
}

/// A parsed `ReserveStock`.
pub fn parse_reserve(
    request: &pb::ReserveStockRequest,
) -> Result<(ReservationId, Lines), InvalidRequest> {
    let mut violations = Violations::default();
    let id = reservation_id(&mut violations, "reservation_id", &request.reservation_id);
    let mut lines = Vec::with_capacity(request.lines.len().min(MAX_RESERVATION_LINES));
    if request.lines.is_empty() || request.lines.len() > MAX_RESERVATION_LINES {
        violations.add(
            "lines",
            format!("must hold 1-{MAX_RESERVATION_LINES} lines"),
        );
    } else {
        for (i, line) in request.lines.iter().enumerate() {
            let product = violations.check(
                &format!("lines[{i}].product_id"),
                ProductId::parse(&line.product_id),
            );
            let quantity = violations.check(
                &format!("lines[{i}].quantity"),
                Quantity::parse(line.quantity),
            );
            if let (Some(product), Some(quantity)) = (product, quantity) {
                lines.push((product, quantity));
            }
        }
    }
    violations.finish(|| (id.expect("checked"), Lines::merged(lines)))
}

fn stock_to_proto(stock: StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        available: stock.available(),
        product_id: stock.product_id.as_str().to_owned(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
    }
}

fn lines_to_proto(lines: &Lines) -> Vec<pb::ReservationLine> {
    lines
        .iter()
        .map(|line| pb::ReservationLine {
            product_id: line.product_id.as_str().to_owned(),
            // At most 100 lines of at most 10,000 units each.
            quantity: u32::try_from(line.quantity).unwrap_or(u32::MAX),
        })
        .collect()
}

fn state_to_proto(state: ReservationState) -> pb::ReservationState {
    match state {
        ReservationState::Reserved => pb::ReservationState::Reserved,
        ReservationState::Released => pb::ReservationState::Released,
        ReservationState::Dispatched => pb::ReservationState::Dispatched,
        ReservationState::Refused => pb::ReservationState::Refused,
    }
}

fn reservation_to_proto(reservation: Reservation) -> pb::Reservation {
    pb::Reservation {
        reservation_id: reservation.id.as_str().to_owned(),
        state: state_to_proto(reservation.state).into(),
        lines: lines_to_proto(&reservation.lines),
        tracking_number: reservation
            .tracking_number
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// A new tracking number.
fn new_tracking_number() -> TrackingNumber {
    let id = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
    TrackingNumber::parse(&format!("TRK-{id}")).expect("36 characters, no control characters")
}

/// Logs a refusal and turns the answer into the gRPC one.
fn answer<T>(rpc: &'static str, result: Result<T, Error>) -> Result<Response<T>, Status> {
    match result {
        Ok(value) => Ok(Response::new(value)),
        Err(error) => {
            tracing::info!(rpc, %error, "refused");
            Err(error.into())
        }
    }
}

#[tonic::async_trait]
impl pb::inventory_server::Inventory for InventoryService {
    async fn set_stock(
        &self,
        request: Request<pb::SetStockRequest>,
    ) -> Result<Response<pb::SetStockResponse>, Status> {
        let result = async {
            let (product, on_hand) = parse_set_stock(request.get_ref())?;
            let stock = self.store.set_stock(&product, on_hand).await?;
            Ok::<_, Error>(pb::SetStockResponse {
                stock: Some(stock_to_proto(stock)),
            })
        };
        answer("SetStock", result.await)
    }

    async fn get_stock(
        &self,
        request: Request<pb::GetStockRequest>,
    ) -> Result<Response<pb::GetStockResponse>, Status> {
        let result = async {
            let product = only_product(&request.get_ref().product_id)?;
            let stock = self.store.stock(&product).await?;
            Ok::<_, Error>(pb::GetStockResponse {
                stock: Some(stock_to_proto(stock)),
            })
        };
        answer("GetStock", result.await)
    }

    async fn reserve_stock(
        &self,
        request: Request<pb::ReserveStockRequest>,
    ) -> Result<Response<pb::ReserveStockResponse>, Status> {
        let result = async {
            let (id, lines) = parse_reserve(request.get_ref())?;
            self.store.reserve(&id, &lines).await?;
            Ok::<_, Error>(pb::ReserveStockResponse {
                reservation_id: id.as_str().to_owned(),
                lines: lines_to_proto(&lines),
            })
        };
        answer("ReserveStock", result.await)
    }

    async fn release_reservation(
        &self,
        request: Request<pb::ReleaseReservationRequest>,
    ) -> Result<Response<pb::ReleaseReservationResponse>, Status> {
        let result = async {
            let id = only_key(&request.get_ref().reservation_id)?;
            self.store.release(&id).await?;
            Ok::<_, Error>(pb::ReleaseReservationResponse {
                reservation_id: id.as_str().to_owned(),
            })
        };
        answer("ReleaseReservation", result.await)
    }

    async fn dispatch_reservation(
        &self,
        request: Request<pb::DispatchReservationRequest>,
    ) -> Result<Response<pb::DispatchReservationResponse>, Status> {
        let result = async {
            let id = only_key(&request.get_ref().reservation_id)?;
            let tracking = self.store.dispatch(&id, new_tracking_number()).await?;
            Ok::<_, Error>(pb::DispatchReservationResponse {
                reservation_id: id.as_str().to_owned(),
                tracking_number: tracking.as_str().to_owned(),
            })
        };
        answer("DispatchReservation", result.await)
    }

    async fn get_reservation(
        &self,
        request: Request<pb::GetReservationRequest>,
    ) -> Result<Response<pb::GetReservationResponse>, Status> {
        let result = async {
            let id = only_key(&request.get_ref().reservation_id)?;
            let reservation = self
                .store
                .reservation(&id)
                .await?
                .ok_or(super::domain::InventoryError::NotFound)?;
            Ok::<_, Error>(pb::GetReservationResponse {
                reservation: Some(reservation_to_proto(reservation)),
            })
        };
        answer("GetReservation", result.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product: &str, quantity: u32) -> pb::ReservationLine {
        pb::ReservationLine {
            product_id: product.into(),
            quantity,
        }
    }

    fn fields(error: InvalidRequest) -> Vec<String> {
        error.0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_reserve_request_lists_every_bad_field() {
        let error = parse_reserve(&pb::ReserveStockRequest {
            reservation_id: String::new(),
            lines: vec![line("a", 1), line("", 0)],
        })
        .unwrap_err();
        assert_eq!(
            fields(error),
            ["reservation_id", "lines[1].product_id", "lines[1].quantity"]
        );
    }

    #[test]
    fn a_reserve_request_needs_lines() {
        let error = parse_reserve(&pb::ReserveStockRequest {
            reservation_id: "r-1".into(),
            lines: vec![],
        })
        .unwrap_err();
        assert_eq!(fields(error), ["lines"]);
    }

    #[test]
    fn a_set_stock_request_refuses_a_negative_count() {
        let error = parse_set_stock(&pb::SetStockRequest {
            product_id: "p".into(),
            on_hand: -1,
        })
        .unwrap_err();
        assert_eq!(fields(error), ["on_hand"]);
    }
}
