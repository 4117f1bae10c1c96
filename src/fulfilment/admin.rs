//! `fulfilment.v1.FulfilmentAdmin`: the sagas as the store holds them, and
//! an operator's retry or cancel, decided by `saga::decide` like any input.

use std::time::Duration;

use chrono::Utc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    saga::{Input, Now, Phase, Refusal, Saga, Timings},
    store::{Applied, ListFilter, Listed, Store, phase_named},
};
use crate::{
    codec,
    proto::fulfilment::v1::{self as pb, fulfilment_admin_server::FulfilmentAdmin},
};

/// Sagas listed when the request gives no limit.
const DEFAULT_LIMIT: u32 = 50;
/// The most sagas one list returns.
const MAX_LIMIT: u32 = 500;

/// The admin service over `store`.
#[derive(Debug, Clone)]
pub struct AdminService {
    store: Store,
    timings: Timings,
    /// Woken when an operator's request adds a call.
    work: std::sync::Arc<tokio::sync::Notify>,
}

impl AdminService {
    /// The service over `store`, whose sagas decide with `timings`; `work`
    /// wakes the worker.
    pub fn new(store: Store, timings: Timings, work: std::sync::Arc<tokio::sync::Notify>) -> Self {
        Self {
            store,
            timings,
            work,
        }
    }

    fn to_proto(&self, listed: &Listed) -> pb::Saga {
        saga_to_proto(listed, &self.timings)
    }

    async fn decide(&self, order_id: &str, input: Input) -> Result<pb::Saga, Status> {
        let order_id = order_id_of(order_id)?;
        let now = Now {
            at: Utc::now(),
            jitter: 0.5,
        };
        match self
            .store
            .input(order_id, &input, now)
            .await
            .map_err(internal)?
        {
            Applied::Changed(_) => self.work.notify_one(),
            Applied::Refused(Refusal::NotAllowed(why)) => {
                return Err(
                    if self.store.get(order_id).await.map_err(internal)?.is_none() {
                        Status::not_found(format!("no saga for order {order_id}"))
                    } else {
                        Status::failed_precondition(why)
                    },
                );
            }
            Applied::Refused(Refusal::Ignored(why)) => {
                return Err(Status::failed_precondition(why));
            }
            Applied::Duplicate => {}
        }
        self.get(order_id).await
    }

    async fn get(&self, order_id: Uuid) -> Result<pb::Saga, Status> {
        let listed = self
            .store
            .get(order_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no saga for order {order_id}")))?;
        Ok(self.to_proto(&listed))
    }
}

fn internal(error: impl std::fmt::Display) -> Status {
    tracing::error!(%error, "fulfilment admin failed");
    Status::internal("internal error")
}

fn order_id_of(raw: &str) -> Result<Uuid, Status> {
    if raw.is_empty() {
        return Err(Status::invalid_argument("order_id: is required"));
    }
    Uuid::parse_str(raw).map_err(|_| Status::invalid_argument("order_id: must be a UUID"))
}

fn phase_to_proto(phase: Phase) -> pb::SagaPhase {
    match phase {
        Phase::Forward => pb::SagaPhase::Forward,
        Phase::Compensating => pb::SagaPhase::Compensating,
        Phase::Completed => pb::SagaPhase::Completed,
        Phase::Cancelled => pb::SagaPhase::Cancelled,
        Phase::Failed => pb::SagaPhase::Failed,
    }
}

fn phase_from_proto(phase: pb::SagaPhase) -> Option<Phase> {
    let name = match phase {
        pb::SagaPhase::Unspecified => return None,
        pb::SagaPhase::Forward => "forward",
        pb::SagaPhase::Compensating => "compensating",
        pb::SagaPhase::Completed => "completed",
        pb::SagaPhase::Cancelled => "cancelled",
        pb::SagaPhase::Failed => "failed",
    };
    phase_named(name)
}

fn duration(d: Option<&prost_types::Duration>, field: &str) -> Result<Option<Duration>, Status> {
    d.map(|d| {
        u64::try_from(d.seconds)
            .ok()
            .zip(u32::try_from(d.nanos).ok())
            .map(|(s, n)| Duration::new(s, n))
            .ok_or_else(|| Status::invalid_argument(format!("{field}: must not be negative")))
    })
    .transpose()
}

/// The proto form of a saga.
pub fn saga_to_proto(listed: &Listed, timings: &Timings) -> pb::Saga {
    let saga: &Saga = &listed.saga;
    let gives_up_at = (saga.phase == Phase::Forward && saga.step.may_give_up()).then(|| {
        saga.step_started
            + chrono::Duration::from_std(timings.step_deadline).unwrap_or(chrono::Duration::MAX)
    });
    pb::Saga {
        order_id: saga.order.order_id.to_string(),
        customer_id: saga.order.customer_id.clone(),
        phase: phase_to_proto(saga.phase) as i32,
        current_step: saga.step.name().into(),
        remaining_steps: saga.remaining().iter().map(|s| s.name().into()).collect(),
        attempts: saga.attempt,
        in_flight: saga.in_flight,
        next_attempt_at: saga.wake_at.map(codec::timestamp),
        gives_up_at: gives_up_at.map(codec::timestamp),
        amount_minor: saga.order.amount_minor,
        currency_code: saga.order.currency_code.clone(),
        tracking_number: saga.tracking_number.clone().unwrap_or_default(),
        cancel_reason: saga.cancel_reason.clone().unwrap_or_default(),
        calls: saga
            .last_status
            .iter()
            .map(|(step, status)| pb::CallStatus {
                step: step.name().into(),
                code: status.code.clone(),
                attempt: status.attempt,
                at: Some(codec::timestamp(status.at)),
            })
            .collect(),
        created_at: Some(codec::timestamp(listed.created_at)),
        updated_at: Some(codec::timestamp(listed.updated_at)),
    }
}

#[tonic::async_trait]
impl FulfilmentAdmin for AdminService {
    async fn list_sagas(
        &self,
        request: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let request = request.into_inner();
        let phase = pb::SagaPhase::try_from(request.phase)
            .map_err(|_| Status::invalid_argument("phase: is not a SagaPhase"))?;
        let filter = ListFilter {
            phase: phase_from_proto(phase),
            stuck_for: duration(request.stuck_for.as_ref(), "stuck_for")?,
            overdue_by: duration(request.overdue_by.as_ref(), "overdue_by")?,
            min_attempts: (request.min_attempts > 0).then_some(request.min_attempts),
            limit: match request.limit {
                0 => DEFAULT_LIMIT,
                n => n.min(MAX_LIMIT),
            },
        };
        let sagas = self
            .store
            .list(&filter, Utc::now())
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ListSagasResponse {
            sagas: sagas.iter().map(|s| self.to_proto(s)).collect(),
        }))
    }

    async fn get_saga(
        &self,
        request: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::GetSagaResponse>, Status> {
        let order_id = order_id_of(&request.get_ref().order_id)?;
        Ok(Response::new(pb::GetSagaResponse {
            saga: Some(self.get(order_id).await?),
        }))
    }

    async fn retry_saga(
        &self,
        request: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::RetrySagaResponse>, Status> {
        let saga = self
            .decide(&request.get_ref().order_id, Input::Retry)
            .await?;
        Ok(Response::new(pb::RetrySagaResponse { saga: Some(saga) }))
    }

    async fn cancel_saga(
        &self,
        request: Request<pb::CancelSagaRequest>,
    ) -> Result<Response<pb::CancelSagaResponse>, Status> {
        let saga = self
            .decide(&request.get_ref().order_id, Input::Cancel)
            .await?;
        Ok(Response::new(pb::CancelSagaResponse { saga: Some(saga) }))
    }
}
