//! Capability index fed untrusted announcement bytes: never panics, refuses everything
//! that does not verify, and keeps its posting lists consistent with its entries.
//!
//! The input is split into records (`u16` length, then that many bytes); each record is
//! offered to the index, alternately as a direct arrival and as a forwarded one, with the
//! clock moving by the record's first byte in seconds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::{CapabilityAnnouncement, CapabilityFilter, NodeId};
use netrun_runtime::capability::{CapabilityIndex, IndexConfig};

fuzz_target!(|data: &[u8]| {
    let mut index = CapabilityIndex::new(NodeId(1), IndexConfig::default())
        .expect("default config is valid");
    let mut now = 1_800_000_000u64;
    let mut rest = data;
    let mut direct = true;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let record = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += u64::from(record.first().copied().unwrap_or(0));
        let via = (!direct).then_some(NodeId(2));
        direct = !direct;
        if index.handle_announcement(now, record, via).is_ok() {
            let announcement =
                CapabilityAnnouncement::from_bytes(record).expect("accepted bytes decode");
            assert!(announcement.verify().is_ok());
        }
        index.handle_timeout(now);
    }
    for &node in index.nodes() {
        let caps = &index.get(node).expect("listed nodes have entries").announcement.capabilities;
        for tag in &caps.tags {
            assert!(index.tagged(tag).contains(&node));
        }
        assert!(index.find(&CapabilityFilter::new()).contains(&node));
    }
});
