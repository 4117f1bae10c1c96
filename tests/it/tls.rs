//! Transport security on the real server: TLS, mutual TLS, and plaintext
//! refused off loopback.

use std::path::PathBuf;

use orders::{
    command::app::Application,
    config::TlsSettings,
    proto::order_commands_client::OrderCommandsClient,
    tls::{DevCertificates, generate_dev_certificates},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{command::place, support};

/// A scratch directory with a fresh development CA and its certificates.
struct Certs {
    dir: PathBuf,
    files: DevCertificates,
}

impl Certs {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(support::unique("tls"));
        let files =
            generate_dev_certificates(&dir, &["localhost".into(), "127.0.0.1".into()], "it-client")
                .expect("generate certificates");
        Self { dir, files }
    }

    fn read(path: &PathBuf) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An order-command with `tls`, no relay; returns its port and a stopper.
async fn serve(tls: TlsSettings) -> (u16, oneshot::Sender<()>, JoinHandle<()>) {
    let database_url = support::fresh_database("tls").await;
    let mut settings = support::command_settings(database_url, support::fresh_kafka("tls"));
    settings.server.tls = tls;
    settings.relay = false;
    let app = Application::build(settings).await.expect("build");
    let port = app.port();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("ran");
    });
    (port, stop, task)
}

/// Places one order over TLS trusting `ca`, presenting `identity` if given.
async fn place_over_tls(
    port: u16,
    ca: &Certs,
    identity: Option<(&PathBuf, &PathBuf)>,
) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(Certs::read(&ca.files.ca)))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(Certs::read(cert), Certs::read(key)));
    }
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    OrderCommandsClient::with_interceptor(channel, support::bearer())
        .place_order(place("cust-tls"))
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

#[tokio::test]
async fn mutual_tls_admits_clients_with_a_certificate_from_its_ca_only() {
    let certs = Certs::new();
    let (port, stop, task) = serve(TlsSettings {
        cert_file: Some(certs.files.server.0.clone()),
        key_file: Some(certs.files.server.1.clone()),
        client_ca_file: Some(certs.files.ca.clone()),
        allow_plaintext: false,
    })
    .await;

    let (cert, key) = &certs.files.client;
    place_over_tls(port, &certs, Some((cert, key)))
        .await
        .expect("a client with a certificate from the CA is served");
    assert!(
        place_over_tls(port, &certs, None).await.is_err(),
        "a client without a certificate is refused"
    );
    let stranger = Certs::new();
    let (cert, key) = &stranger.files.client;
    assert!(
        place_over_tls(port, &certs, Some((cert, key)))
            .await
            .is_err(),
        "a client certificate from another CA is refused"
    );
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("TCP connects");
    assert!(
        OrderCommandsClient::with_interceptor(plain, support::bearer())
            .place_order(place("cust-plain"))
            .await
            .is_err(),
        "plaintext is not served on a TLS port"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_any_client_that_trusts_the_server() {
    let certs = Certs::new();
    let (port, stop, task) = serve(TlsSettings {
        cert_file: Some(certs.files.server.0.clone()),
        key_file: Some(certs.files.server.1.clone()),
        client_ca_file: None,
        allow_plaintext: false,
    })
    .await;
    place_over_tls(port, &certs, None)
        .await
        .expect("served over TLS");
    let stranger = Certs::new();
    assert!(
        place_over_tls(port, &stranger, None).await.is_err(),
        "a client that trusts another CA refuses the server"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn plaintext_on_a_non_loopback_address_refuses_to_start() {
    let database_url = support::fresh_database("tls_plain").await;
    let mut settings = support::command_settings(database_url, support::fresh_kafka("tls_plain"));
    settings.listen_addr = "0.0.0.0:0".parse().unwrap();
    settings.relay = false;
    let error = Application::build(settings)
        .await
        .err()
        .expect("refuses to start");
    assert!(error.to_string().contains("--allow-plaintext"), "{error}");
    // The real binary says so too, and exits non-zero.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_order-command"))
        .envs(support::server_env())
        .env("ORDERS_COMMAND_ADDR", "0.0.0.0:0")
        .env(
            "ORDERS_WRITE_DATABASE_URL",
            support::fresh_database("tls_plain_bin").await,
        )
        .env("KAFKA_BOOTSTRAP_SERVERS", support::bootstrap())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run order-command");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("not a loopback address"), "{text}");
}
