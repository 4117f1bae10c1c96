//! The query requests parsed at the edge: order ids, list filters and page
//! tokens, into what the reads take. Pure, so that the property tests run
//! every request through it without a database.

use uuid::Uuid;

use crate::{
    codec,
    domain::{CustomerId, OrderId},
    proto,
    query::{
        QueryError,
        page_token::{self, ListFilter, OrdersCursor},
        read_model::status_name,
    },
};

/// A required order id.
pub fn order_id(raw: &str) -> Result<Uuid, QueryError> {
    if raw.is_empty() {
        return Err(QueryError::invalid("order_id", "is required"));
    }
    OrderId::parse(raw)
        .map(|id| id.as_uuid())
        .map_err(|e| QueryError::invalid("order_id", e.0))
}

/// The filter of a `ListOrders` call and, past its first page, where it
/// continues. A caller `confined` to a customer lists that customer's orders,
/// whatever the request names.
pub fn list_orders(
    request: &proto::ListOrdersRequest,
    confined: Option<&CustomerId>,
) -> Result<(ListFilter, Option<OrdersCursor>), QueryError> {
    let requested = request
        .customer_id
        .as_ref()
        .map(|c| {
            CustomerId::parse(c)
                .map(|c| c.as_str().to_owned())
                .map_err(|e| QueryError::invalid("customer_id", e.0))
        })
        .transpose()?;
    let customer_id = confined.map(|c| c.as_str().to_owned()).or(requested);
    let status = proto::OrderStatus::try_from(request.status)
        .map_err(|_| QueryError::invalid("status", "is not an OrderStatus"))?;
    let filter = ListFilter {
        customer_id,
        status: codec::status_from_proto(status).map(|s| status_name(s).to_owned()),
    };
    let cursor = if request.page_token.is_empty() {
        None
    } else {
        Some(
            page_token::decode_orders(&request.page_token, &filter)
                .map_err(|e| QueryError::invalid("page_token", e.to_string()))?,
        )
    };
    Ok((filter, cursor))
}

/// The order of a `GetOrderHistory` call and the version its page starts after.
pub fn history(request: &proto::GetOrderHistoryRequest) -> Result<(Uuid, u64), QueryError> {
    let order_id = order_id(&request.order_id)?;
    let after = if request.page_token.is_empty() {
        0
    } else {
        page_token::decode_history(&request.page_token, order_id)
            .map_err(|e| QueryError::invalid("page_token", e.to_string()))?
    };
    Ok((order_id, after))
}
