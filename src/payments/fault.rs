//! The fault switch: how the stand-in provider fails on purpose, for tests
//! of its callers. Set from the configuration at start, and at any time in
//! process through the handle `Application::fault` returns.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use tonic::Status;

use crate::config::PaymentsFault;

/// A shared, settable [`PaymentsFault`].
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<AtomicU8>);

const FAULTS: [PaymentsFault; 4] = [
    PaymentsFault::Off,
    PaymentsFault::Unavailable,
    PaymentsFault::Hang,
    PaymentsFault::HangAfterCommit,
];

impl FaultSwitch {
    /// A switch set to `fault`.
    pub fn new(fault: PaymentsFault) -> Self {
        let switch = Self::default();
        switch.set(fault);
        switch
    }

    /// From now on, fail this way.
    pub fn set(&self, fault: PaymentsFault) {
        let index = FAULTS.iter().position(|f| *f == fault).unwrap_or(0);
        self.0.store(index as u8, Ordering::SeqCst);
        if fault != PaymentsFault::Off {
            tracing::warn!(?fault, "payments fault injection on");
        }
    }

    /// How it fails now.
    pub fn get(&self) -> PaymentsFault {
        FAULTS[usize::from(self.0.load(Ordering::SeqCst)) % FAULTS.len()]
    }

    /// Before an RPC's work: UNAVAILABLE, or never, or go ahead.
    pub async fn before(&self) -> Result<(), Status> {
        match self.get() {
            PaymentsFault::Unavailable => Err(Status::unavailable(
                "the payment provider is unavailable; retry",
            )),
            PaymentsFault::Hang => std::future::pending().await,
            PaymentsFault::Off | PaymentsFault::HangAfterCommit => Ok(()),
        }
    }

    /// After an RPC's work committed: never answer, or go ahead.
    pub async fn after(&self) {
        if self.get() == PaymentsFault::HangAfterCommit {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_reads_back_what_was_set() {
        let switch = FaultSwitch::new(PaymentsFault::Off);
        for fault in FAULTS {
            switch.clone().set(fault);
            assert_eq!(switch.get(), fault);
        }
    }
}
