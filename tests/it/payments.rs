//! The Payments stand-in on the real PostgreSQL: an in-process server on a
//! free port over a fresh database, called over gRPC, its fault switch set
//! in process.

use std::{collections::HashSet, time::Duration};

use orders::{
    auth::{self, AuthedChannel, BearerToken},
    config::{DEFAULT_DECLINE_ABOVE_MINOR, PaymentsFault, PaymentsSettings},
    payments::{app::Application, fault::FaultSwitch},
    proto::payments::v1::{self as pb, payments_client::PaymentsClient},
};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::support;

/// A running `payments` on a free port over a fresh database.
pub struct TestPayments {
    pub client: PaymentsClient<AuthedChannel>,
    pub port: u16,
    /// The server's fault switch.
    pub fault: FaultSwitch,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestPayments {
    /// A server with the default limit and its own fresh database.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose settings `adjust` changes.
    pub async fn start_with(adjust: impl FnOnce(&mut PaymentsSettings)) -> Self {
        let database_url = support::fresh_database("pay").await;
        let mut settings = PaymentsSettings::new(database_url);
        settings.server.allow_superuser = true;
        settings.server.auth = support::auth_settings();
        adjust(&mut settings);
        Self::start_with_settings(settings).await
    }

    /// A server with `settings`.
    pub async fn start_with_settings(settings: PaymentsSettings) -> Self {
        let app = Application::build(settings).await.expect("build payments");
        let port = app.port();
        let fault = app.fault();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run_until_stopped(async {
                let _ = stopped.await;
            })
            .await
            .expect("payments ran");
        });
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to payments");
        let token = BearerToken::new(&support::token(
            &[auth::SCOPE_PAYMENTS_READ, auth::SCOPE_PAYMENTS_WRITE],
            None,
        ))
        .expect("ascii token");
        Self {
            client: PaymentsClient::with_interceptor(channel, token),
            port,
            fault,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.fault.set(PaymentsFault::Off);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("payments stopped in time")
                .expect("payments task");
        }
    }

    /// Authorizes `amount_minor` EUR for customer `c-1` under `key`.
    pub async fn authorize(
        &self,
        key: &str,
        amount_minor: i64,
    ) -> Result<pb::AuthorizePaymentResponse, Status> {
        self.client
            .clone()
            .authorize_payment(authorize_request(key, amount_minor))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Captures `key`.
    pub async fn capture(&self, key: &str) -> Result<pb::CapturePaymentResponse, Status> {
        self.client
            .clone()
            .capture_payment(pb::CapturePaymentRequest {
                payment_id: key.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Voids `key`.
    pub async fn void(&self, key: &str) -> Result<pb::VoidPaymentResponse, Status> {
        self.client
            .clone()
            .void_payment(pb::VoidPaymentRequest {
                payment_id: key.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The payment `key`.
    pub async fn payment(&self, key: &str) -> Result<pb::Payment, Status> {
        self.client
            .clone()
            .get_payment(pb::GetPaymentRequest {
                payment_id: key.into(),
            })
            .await
            .map(|r| r.into_inner().payment.expect("a payment"))
    }
}

fn authorize_request(key: &str, amount_minor: i64) -> pb::AuthorizePaymentRequest {
    pb::AuthorizePaymentRequest {
        payment_id: key.into(),
        customer_id: "c-1".into(),
        amount_minor,
        currency_code: "EUR".into(),
    }
}

fn assert_declined(status: &Status) {
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status.message(), "payment declined");
}

/// A call that ran past its deadline: tonic reports DEADLINE_EXCEEDED from
/// the server, or CANCELLED ("Timeout expired") from its own timer.
fn assert_timed_out(status: &Status) {
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
}

#[tokio::test]
async fn authorizes_and_captures() {
    let payments = TestPayments::start().await;
    let authorized = payments.authorize("order-1", 1_250).await.unwrap();
    assert_eq!(
        (authorized.payment_id.as_str(), authorized.amount_minor),
        ("order-1", 1_250)
    );
    let shown = payments.payment("order-1").await.unwrap();
    assert_eq!(shown.state(), pb::PaymentState::Authorized);
    assert_eq!(
        (
            shown.customer_id.as_str(),
            shown.amount_minor,
            shown.currency_code.as_str()
        ),
        ("c-1", 1_250, "EUR")
    );
    assert_eq!(shown.captured_minor, 0);

    let captured = payments.capture("order-1").await.unwrap();
    assert_eq!(captured.captured_minor, 1_250);
    let shown = payments.payment("order-1").await.unwrap();
    assert_eq!(shown.state(), pb::PaymentState::Captured);
    assert_eq!(shown.captured_minor, 1_250);
    payments.stop().await;
}

#[tokio::test]
async fn declines_above_the_default_limit_and_keeps_declining() {
    let payments = TestPayments::start().await;
    payments
        .authorize("at-limit", DEFAULT_DECLINE_ABOVE_MINOR)
        .await
        .expect("the limit itself is authorized");

    let declined = payments
        .authorize("above", DEFAULT_DECLINE_ABOVE_MINOR + 1)
        .await
        .unwrap_err();
    assert_declined(&declined);
    let again = payments
        .authorize("above", DEFAULT_DECLINE_ABOVE_MINOR + 1)
        .await
        .unwrap_err();
    assert_declined(&again);
    let shown = payments.payment("above").await.unwrap();
    assert_eq!(shown.state(), pb::PaymentState::Declined);

    assert_declined(&payments.capture("above").await.unwrap_err());
    payments
        .void("above")
        .await
        .expect("voiding a declined payment changes nothing");
    assert_eq!(
        payments.payment("above").await.unwrap().state(),
        pb::PaymentState::Declined
    );
    payments.stop().await;
}

#[tokio::test]
async fn declines_above_a_configured_limit() {
    let payments = TestPayments::start_with(|s| s.decline_above_minor = 100).await;
    payments.authorize("small", 100).await.expect("authorized");
    assert_declined(&payments.authorize("large", 101).await.unwrap_err());
    payments.stop().await;
}

#[tokio::test]
async fn answers_a_retry_with_the_first_answer_and_applies_it_once() {
    let payments = TestPayments::start().await;
    let first = payments.authorize("order-1", 500).await.unwrap();
    assert_eq!(payments.authorize("order-1", 500).await.unwrap(), first);

    let captured = payments.capture("order-1").await.unwrap();
    assert_eq!(payments.capture("order-1").await.unwrap(), captured);
    // Authorizing again after the capture answers as the first time, and takes nothing more.
    assert_eq!(payments.authorize("order-1", 500).await.unwrap(), first);
    let shown = payments.payment("order-1").await.unwrap();
    assert_eq!(shown.state(), pb::PaymentState::Captured);
    assert_eq!(shown.captured_minor, 500);

    payments.authorize("order-2", 700).await.unwrap();
    let voided = payments.void("order-2").await.unwrap();
    assert_eq!(payments.void("order-2").await.unwrap(), voided);
    assert_eq!(
        payments.payment("order-2").await.unwrap().state(),
        pb::PaymentState::Voided
    );
    payments.stop().await;
}

#[tokio::test]
async fn refuses_a_key_reused_for_another_payment_with_already_exists() {
    let payments = TestPayments::start().await;
    payments.authorize("order-1", 500).await.unwrap();
    let others = [
        authorize_request("order-1", 501),
        pb::AuthorizePaymentRequest {
            customer_id: "c-2".into(),
            ..authorize_request("order-1", 500)
        },
        pb::AuthorizePaymentRequest {
            currency_code: "USD".into(),
            ..authorize_request("order-1", 500)
        },
    ];
    for other in others {
        let status = payments
            .client
            .clone()
            .authorize_payment(other.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{other:?}: {status:?}");
    }
    let shown = payments.payment("order-1").await.unwrap();
    assert_eq!(
        (shown.amount_minor, shown.customer_id.as_str()),
        (500, "c-1")
    );
    payments.stop().await;
}

#[tokio::test]
async fn records_a_void_of_an_unknown_key_so_it_is_never_authorized() {
    let payments = TestPayments::start().await;
    payments
        .void("order-1")
        .await
        .expect("a void of an unknown key is fine");
    let late = payments.authorize("order-1", 500).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("voided"), "{}", late.message());
    let tombstone = payments.payment("order-1").await.unwrap();
    assert_eq!(tombstone.state(), pb::PaymentState::Voided);
    assert_eq!((tombstone.amount_minor, tombstone.captured_minor), (0, 0));
    let status = payments.capture("order-1").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    payments.stop().await;
}

#[tokio::test]
async fn keeps_capture_and_void_apart() {
    let payments = TestPayments::start().await;
    payments.authorize("voided", 500).await.unwrap();
    payments.void("voided").await.unwrap();
    let status = payments.capture("voided").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    payments.authorize("captured", 500).await.unwrap();
    payments.capture("captured").await.unwrap();
    let status = payments.void("captured").await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        payments.payment("captured").await.unwrap().captured_minor,
        500
    );

    let status = payments.capture("never").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = payments.payment("never").await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    payments.stop().await;
}

#[tokio::test]
async fn authorizes_a_key_once_under_concurrent_retries() {
    let payments = TestPayments::start().await;
    let attempts = (0..20).map(|_| {
        let client = payments.client.clone();
        tokio::spawn(async move {
            client
                .clone()
                .authorize_payment(authorize_request("order-1", 900))
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let answers: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("authorized"))
        .collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    payments.stop().await;
}

#[tokio::test]
async fn refuses_invalid_requests_with_field_violations() {
    let payments = TestPayments::start().await;
    let status = payments
        .client
        .clone()
        .authorize_payment(pb::AuthorizePaymentRequest {
            payment_id: "order-1".into(),
            customer_id: String::new(),
            amount_minor: -1,
            currency_code: "euro".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields: Vec<_> = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["customer_id", "amount_minor", "currency_code"]);
    let status = payments.void("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        payments.payment("order-1").await.unwrap_err().code(),
        Code::NotFound,
        "nothing recorded"
    );
    payments.stop().await;
}

#[tokio::test]
async fn the_fault_switch_makes_it_unavailable_and_changes_nothing() {
    let payments = TestPayments::start().await;
    payments.fault.set(PaymentsFault::Unavailable);
    let status = payments.authorize("order-1", 500).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = payments.payment("order-1").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    payments.fault.set(PaymentsFault::Off);
    assert_eq!(
        payments.payment("order-1").await.unwrap_err().code(),
        Code::NotFound,
        "the refused authorization left nothing"
    );
    payments.authorize("order-1", 500).await.expect("back");
    payments.stop().await;
}

#[tokio::test]
async fn the_fault_switch_makes_it_hang_until_the_callers_deadline() {
    let payments = TestPayments::start().await;
    let with_deadline = |key: &str| {
        let mut request = tonic::Request::new(authorize_request(key, 500));
        request.set_timeout(Duration::from_millis(300));
        request
    };

    // Hang: nothing is done.
    payments.fault.set(PaymentsFault::Hang);
    let status = payments
        .client
        .clone()
        .authorize_payment(with_deadline("order-1"))
        .await
        .unwrap_err();
    assert_timed_out(&status);
    payments.fault.set(PaymentsFault::Off);
    assert_eq!(
        payments.payment("order-1").await.unwrap_err().code(),
        Code::NotFound
    );

    // Hang after the commit: done, and the caller does not learn it; a
    // retry with the same key settles it.
    payments.fault.set(PaymentsFault::HangAfterCommit);
    let status = payments
        .client
        .clone()
        .authorize_payment(with_deadline("order-2"))
        .await
        .unwrap_err();
    assert_timed_out(&status);
    payments.fault.set(PaymentsFault::Off);
    assert_eq!(
        payments.payment("order-2").await.unwrap().state(),
        pb::PaymentState::Authorized
    );
    payments
        .authorize("order-2", 500)
        .await
        .expect("the retry answers as the first time");
    payments.stop().await;
}

#[tokio::test]
async fn the_binary_takes_the_fault_from_its_configuration() {
    let payments = TestPayments::start_with(|s| s.fault = PaymentsFault::Unavailable).await;
    assert_eq!(
        payments.authorize("order-1", 500).await.unwrap_err().code(),
        Code::Unavailable
    );
    payments.stop().await;
}

#[tokio::test]
async fn reads_need_the_read_scope_and_changes_the_write_scope() {
    let payments = TestPayments::start().await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", payments.port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let reader = BearerToken::new(&support::token(&[auth::SCOPE_PAYMENTS_READ], None)).unwrap();
    let mut reader = PaymentsClient::with_interceptor(channel, reader);
    let status = reader
        .authorize_payment(authorize_request("order-1", 500))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = reader
        .get_payment(pb::GetPaymentRequest {
            payment_id: "order-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "a reader may read: {status:?}"
    );
    payments.stop().await;
}

#[tokio::test]
async fn reflects_only_its_own_service_and_describes_itself_as_a_stand_in() {
    let payments = TestPayments::start().await;
    let address = format!("127.0.0.1:{}", payments.port);
    let grpcurl = |args: &[&str]| {
        let mut command = tokio::process::Command::new("grpcurl");
        command.arg("-plaintext").arg(&address).args(args);
        command
    };
    let output = grpcurl(&["list"]).output().await.expect("run grpcurl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = String::from_utf8_lossy(&output.stdout);
    let services: HashSet<&str> = listed.lines().collect();
    assert!(services.contains("payments.v1.Payments"), "{listed}");
    assert!(
        !listed.contains("orders.v1") && !listed.contains("inventory.v1"),
        "{listed}"
    );

    let output = grpcurl(&["describe", "payments.v1.Payments"])
        .output()
        .await
        .expect("run grpcurl");
    let described = String::from_utf8_lossy(&output.stdout);
    assert!(described.contains("stand-in"), "{described}");
    payments.stop().await;
}

#[tokio::test]
async fn runs_as_its_own_role_which_owns_and_migrates_its_database() {
    let (url, as_role) = crate::inventory::database_owned_by("pay_role", "orders_payments").await;
    let mut settings = PaymentsSettings::new(url);
    settings.server.auth = support::auth_settings();
    let payments = TestPayments::start_with_settings(settings).await;
    payments.authorize("order-1", 500).await.unwrap();
    payments.stop().await;

    let refused = sqlx::PgConnection::connect(&as_role("orders_inventory"))
        .await
        .expect_err("another role may not connect");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
}
