//! What a projector announces when it commits, and how it is written in a
//! NOTIFY payload: for each changed order an `order_id:version` entry (woken
//! `min_version` readers and `WatchOrder` streams) followed by an
//! `order_id@customer` entry (woken `WatchOrders` streams), entries separated
//! by commas.
//!
//! The customer is written as its `CustomerKey`, a 64-bit hash in hex: a
//! customer id may hold any character, and a payload has at most 8000 bytes.
//! Two customers may share a key; a stream woken for an order of another
//! customer reads it and drops it. A reader that does not know an entry's
//! form skips it, so `order_id@customer` entries are invisible to processes
//! that only read `order_id:version`.

use std::fmt;

use uuid::Uuid;

use crate::domain::CustomerId;

/// Longest payload of one NOTIFY; PostgreSQL's limit is 8000 bytes.
const PAYLOAD_MAX: usize = 7_000;

/// A customer's 64-bit key in announcements (FNV-1a of its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerKey(u64);

impl CustomerKey {
    /// The key of `customer`.
    pub fn of(customer: &CustomerId) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        Self(customer.as_str().bytes().fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        }))
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One announced fact about a changed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// The order is projected at this version.
    Version(Uuid, u64),
    /// The order belongs to the customer with this key.
    Customer(Uuid, CustomerKey),
}

impl Announced {
    /// What a commit of `order_id` at `version`, of `customer`, announces.
    pub fn change(
        order_id: Uuid,
        version: u64,
        customer: Option<&CustomerId>,
    ) -> impl Iterator<Item = Self> {
        std::iter::once(Self::Version(order_id, version))
            .chain(customer.map(|customer| Self::Customer(order_id, CustomerKey::of(customer))))
    }
}

/// Payloads of at most `PAYLOAD_MAX` bytes announcing `changes` (an order's
/// entries stay in one payload).
pub fn payloads<'a>(
    changes: impl Iterator<Item = (Uuid, u64, Option<&'a CustomerId>)>,
) -> Vec<String> {
    let mut payloads: Vec<String> = vec![];
    let mut current = String::new();
    for (order_id, version, customer) in changes {
        let mut entries = format!("{order_id}:{version}");
        if let Some(customer) = customer {
            entries.push_str(&format!(",{order_id}@{}", CustomerKey::of(customer)));
        }
        if !current.is_empty() && current.len() + 1 + entries.len() > PAYLOAD_MAX {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&entries);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Parses a payload, skipping entries of unknown or malformed form.
pub fn parse(payload: &str) -> impl Iterator<Item = Announced> + '_ {
    payload.split(',').filter_map(|entry| {
        if let Some((id, version)) = entry.split_once(':') {
            Some(Announced::Version(
                Uuid::parse_str(id).ok()?,
                version.parse().ok()?,
            ))
        } else {
            let (id, key) = entry.split_once('@')?;
            if key.len() != 16 {
                return None;
            }
            Some(Announced::Customer(
                Uuid::parse_str(id).ok()?,
                CustomerKey(u64::from_str_radix(key, 16).ok()?),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_back_and_garbage_is_skipped() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let customer = CustomerId::parse("c:1,2@x").unwrap();
        let written = payloads([(a, 3, Some(&customer)), (b, 12, None)].into_iter());
        assert_eq!(written.len(), 1);
        let payload = format!("{},junk,{b}:x,{a}@zz", written[0]);
        assert_eq!(
            parse(&payload).collect::<Vec<_>>(),
            vec![
                Announced::Version(a, 3),
                Announced::Customer(a, CustomerKey::of(&customer)),
                Announced::Version(b, 12),
            ]
        );
    }

    #[test]
    fn a_reader_of_versions_only_skips_customer_entries() {
        // What a process that predates customer entries does with a payload.
        let a = Uuid::now_v7();
        let customer = CustomerId::parse("someone").unwrap();
        let payload = &payloads([(a, 2, Some(&customer))].into_iter())[0];
        let versions_only: Vec<(Uuid, u64)> = payload
            .split(',')
            .filter_map(|pair| {
                let (id, version) = pair.split_once(':')?;
                Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
            })
            .collect();
        assert_eq!(versions_only, vec![(a, 2)]);
    }

    #[test]
    fn long_batches_split_into_payloads_under_the_limit_keeping_an_orders_entries_together() {
        let customer = CustomerId::parse("a-customer").unwrap();
        let changes: Vec<(Uuid, u64)> = (0..400).map(|v| (Uuid::now_v7(), v)).collect();
        let written = payloads(changes.iter().map(|&(id, v)| (id, v, Some(&customer))));
        assert!(written.len() > 1);
        assert!(written.iter().all(|p| p.len() <= PAYLOAD_MAX));
        let parsed: Vec<Announced> = written.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(parsed.len(), 800);
        for payload in &written {
            let entries: Vec<Announced> = parse(payload).collect();
            assert!(matches!(entries.first(), Some(Announced::Version(..))));
            assert!(matches!(entries.last(), Some(Announced::Customer(..))));
        }
        assert_eq!(
            CustomerKey::of(&customer).to_string().len(),
            16,
            "keys are fixed width"
        );
    }
}
