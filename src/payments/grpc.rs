//! The `payments.v1.Payments` gRPC edge: the fault switch first, then each
//! request parsed into validated values (every bad field a violation), the
//! store called and the answer mapped.

use tonic::{Request, Response, Status};

use super::{
    Error,
    domain::{Amount, Authorization, Payment, PaymentError, PaymentId, PaymentState},
    fault::FaultSwitch,
    store::PaymentStore,
};
use crate::{
    codec::{InvalidRequest, Violations},
    domain::{CurrencyCode, CustomerId},
    proto::payments::v1 as pb,
};

/// The `Payments` service.
pub struct PaymentsService {
    store: PaymentStore,
    fault: FaultSwitch,
}

impl PaymentsService {
    /// A service over `store`, failing as `fault` says.
    pub fn new(store: PaymentStore, fault: FaultSwitch) -> Self {
        Self { store, fault }
    }

    /// Runs `work` between the fault switch's checks, and answers.
    async fn run<T>(
        &self,
        rpc: &'static str,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<Response<T>, Status> {
        self.fault.before().await?;
        match work.await {
            Ok(value) => {
                self.fault.after().await;
                Ok(Response::new(value))
            }
            Err(error) => {
                tracing::info!(rpc, %error, "refused");
                Err(error.into())
            }
        }
    }
}

/// The key of a request that carries only one.
fn only_key(raw: &str) -> Result<PaymentId, InvalidRequest> {
    let mut violations = Violations::default();
    let id = violations.check("payment_id", PaymentId::parse(raw));
    violations.finish(|| id.expect("checked"))
}

/// A parsed `AuthorizePayment`.
pub fn parse_authorize(
    request: &pb::AuthorizePaymentRequest,
) -> Result<(PaymentId, Authorization), InvalidRequest> {
    let mut violations = Violations::default();
    let id = violations.check("payment_id", PaymentId::parse(&request.payment_id));
    let customer_id = violations.check("customer_id", CustomerId::parse(&request.customer_id));
    let amount = violations.check("amount_minor", Amount::parse(request.amount_minor));
    let currency = violations.check("currency_code", CurrencyCode::parse(&request.currency_code));
    violations.finish(|| {
        (
            id.expect("checked"),
            Authorization {
                customer_id: customer_id.expect("checked"),
                amount: amount.expect("checked"),
                currency: currency.expect("checked"),
            },
        )
    })
}

fn state_to_proto(state: PaymentState) -> pb::PaymentState {
    match state {
        PaymentState::Authorized => pb::PaymentState::Authorized,
        PaymentState::Captured => pb::PaymentState::Captured,
        PaymentState::Voided => pb::PaymentState::Voided,
        PaymentState::Declined => pb::PaymentState::Declined,
    }
}

fn payment_to_proto(payment: &Payment) -> pb::Payment {
    let authorization = payment.authorization.as_ref();
    pb::Payment {
        payment_id: payment.id.as_str().to_owned(),
        state: state_to_proto(payment.state).into(),
        customer_id: authorization
            .map(|a| a.customer_id.as_str().to_owned())
            .unwrap_or_default(),
        amount_minor: authorization.map_or(0, |a| a.amount.get()),
        currency_code: authorization
            .map(|a| a.currency.as_str().to_owned())
            .unwrap_or_default(),
        captured_minor: payment.captured_minor(),
    }
}

#[tonic::async_trait]
impl pb::payments_server::Payments for PaymentsService {
    async fn authorize_payment(
        &self,
        request: Request<pb::AuthorizePaymentRequest>,
    ) -> Result<Response<pb::AuthorizePaymentResponse>, Status> {
        self.run("AuthorizePayment", async {
            let (id, authorization) = parse_authorize(request.get_ref())?;
            self.store.authorize(&id, &authorization).await?;
            Ok(pb::AuthorizePaymentResponse {
                payment_id: id.as_str().to_owned(),
                amount_minor: authorization.amount.get(),
                currency_code: authorization.currency.as_str().to_owned(),
            })
        })
        .await
    }

    async fn capture_payment(
        &self,
        request: Request<pb::CapturePaymentRequest>,
    ) -> Result<Response<pb::CapturePaymentResponse>, Status> {
        self.run("CapturePayment", async {
            let id = only_key(&request.get_ref().payment_id)?;
            let payment = self.store.capture(&id).await?;
            Ok(pb::CapturePaymentResponse {
                payment_id: id.as_str().to_owned(),
                captured_minor: payment.captured_minor(),
                currency_code: payment
                    .authorization
                    .map(|a| a.currency.as_str().to_owned())
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn void_payment(
        &self,
        request: Request<pb::VoidPaymentRequest>,
    ) -> Result<Response<pb::VoidPaymentResponse>, Status> {
        self.run("VoidPayment", async {
            let id = only_key(&request.get_ref().payment_id)?;
            self.store.void(&id).await?;
            Ok(pb::VoidPaymentResponse {
                payment_id: id.as_str().to_owned(),
            })
        })
        .await
    }

    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::GetPaymentResponse>, Status> {
        self.run("GetPayment", async {
            let id = only_key(&request.get_ref().payment_id)?;
            let payment = self
                .store
                .payment(&id)
                .await?
                .ok_or(PaymentError::NotFound)?;
            Ok(pb::GetPaymentResponse {
                payment: Some(payment_to_proto(&payment)),
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorize_request_lists_every_bad_field() {
        let error = parse_authorize(&pb::AuthorizePaymentRequest {
            payment_id: String::new(),
            customer_id: String::new(),
            amount_minor: 0,
            currency_code: "eur".into(),
        })
        .unwrap_err();
        let fields: Vec<_> = error.0.into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["payment_id", "customer_id", "amount_minor", "currency_code"]
        );
    }
}
