//! What a Kafka broker (or whoever answers at its address) sends the consumer: response frames
//! of each API it calls at each version it may pick, record batches from a fetch, and SCRAM
//! server messages. Decoded or refused, never a panic.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringcast_proto::kafka::messages::{
    ApiVersionsRequest, FetchRequest, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use ringcast_proto::kafka::scram::{Mechanism, Scram};
use ringcast_proto::kafka::{decode_response, frame_len, records};

fuzz_target!(|data: &[u8]| {
    let [which, version, rest @ ..] = data else {
        return;
    };
    let _ = frame_len(rest);
    let frame = Bytes::copy_from_slice(rest);
    // The correlation the frame carries, so decoding goes past the header check.
    let correlation = rest
        .get(..4)
        .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let v = (*version % 18) as i16;
    match which % 12 {
        0 => drop(decode_response::<ApiVersionsRequest>(frame, v, correlation)),
        1 => drop(decode_response::<MetadataRequest>(frame, v, correlation)),
        2 => drop(decode_response::<ListOffsetsRequest>(frame, v, correlation)),
        3 => drop(decode_response::<FetchRequest>(frame, v, correlation)),
        4 => drop(decode_response::<FindCoordinatorRequest>(frame, v, correlation)),
        5 => drop(decode_response::<OffsetFetchRequest>(frame, v, correlation)),
        6 => drop(decode_response::<OffsetCommitRequest>(frame, v, correlation)),
        7 => drop(decode_response::<ProduceRequest>(frame, v, correlation)),
        8 => drop(decode_response::<SaslHandshakeRequest>(frame, v, correlation)),
        9 => drop(decode_response::<SaslAuthenticateRequest>(frame, v, correlation)),
        10 => drop(records::decode(frame, i64::from(*version) - 1)),
        _ => {
            let mech = if version % 2 == 0 { Mechanism::Sha256 } else { Mechanism::Sha512 };
            let (mut s, _) = Scram::start(mech, "user", "pencil", "rOprNGfwEbeRWgbNEkqO");
            let (first, last) = rest.split_at(rest.len() / 2);
            if s.answer(first).is_ok() {
                let _ = s.finish(last);
            }
            let _ = s.finish(rest);
        }
    }
});
