//! Channel subprotocol decoders: membership bodies and event frames never panic; whatever
//! decodes re-encodes and decodes to the same value; a decoded membership message is then
//! handled by a publisher registry (token-gated and open channels), which must answer
//! every Subscribe and Unsubscribe with an Ack for the same nonce and channel (an Ack or an
//! Evicted notice gets no answer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::channel::event::EventFrame;
use netrun_messages::{ChannelName, Identity, MembershipMessage};
use netrun_runtime::channel::{ChannelConfig, ChannelRegistry, Peer, RegistryConfig};

const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = MembershipMessage::decode(data) {
        let again = message.encode().expect("decoded messages encode");
        assert_eq!(
            MembershipMessage::decode(&again).expect("re-encoding decodes"),
            message
        );
        let publisher = Identity::from_seed([1; 32]);
        let peer = Identity::from_seed([2; 32]);
        let mut registry =
            ChannelRegistry::new(publisher.entity_id(), RegistryConfig::default())
                .expect("default config is valid");
        let gated = ChannelConfig::new(message.channel().clone()).with_require_token(true);
        registry.register(gated).expect("first channel registers");
        if let Ok(open) = ChannelName::new("open") {
            let _ = registry.register(ChannelConfig::new(open));
        }
        let from = Peer {
            node: peer.node_id(),
            entity: peer.entity_id(),
            capabilities: None,
        };
        let ack = registry.handle_message(NOW, from, &message);
        match (&message, ack) {
            (MembershipMessage::Ack(_) | MembershipMessage::Evicted(_), None) => {}
            (_, Some(ack)) => {
                assert_eq!(ack.nonce, message.nonce());
                assert_eq!(&ack.channel, message.channel());
            }
            (_, None) => panic!("subscribe and unsubscribe are always answered"),
        }
        let _ = registry.sweep(NOW + u64::from(data[0]) * 1000);
    }

    if let Ok(frame) = EventFrame::decode(data) {
        assert_eq!(frame.to_vec().expect("decoded frames encode"), data);
    }
    let mut rest = data;
    while let Ok((frame, used)) = EventFrame::decode_prefix(rest) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(frame.encoded_len(), used);
        rest = &rest[used..];
    }
});
