//! The DHT contact record decoder and the acceptance rules built on it: never panic, a
//! record that decodes re-encodes to the same bytes, and a resolver or a storing node
//! judges any bytes without panicking (a random record almost never verifies).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::discovery::{DhtId, SignedContact};
use netrun_runtime::dht::{admit_store, contact_record};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = SignedContact::decode(data) {
        assert_eq!(record.to_vec(), data);
        let accepted = contact_record(record.node_id(), data);
        assert_eq!(accepted.is_ok(), record.verify().is_ok());
    }
    // The input split in two: an offered value over a held one.
    let (held, offered) = data.split_at(data.len() / 2);
    let mut key = [0; 32];
    key.iter_mut().zip(held).for_each(|(k, b)| *k = *b);
    let key = DhtId(key);
    let _ = admit_store(Some("fuzz"), &key, offered, Some(held));
    let _ = admit_store(None, &key, data, None);
});
