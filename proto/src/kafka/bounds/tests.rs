//! Each response, with every array holding an element, encoded by `kafka-protocol` at each
//! version asked for: the walk accepts it and ends where the decoder ends. Counts that do not
//! fit are refused.

use super::*;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn s(v: &'static str) -> StrBytes {
    StrBytes::from_static_str(v)
}

fn topic() -> TopicName {
    TopicName(s("pushes"))
}

fn passes<M: Encodable + Decodable + PartialEq + std::fmt::Debug>(
    api: ApiKey,
    m: impl Fn(i16) -> M,
) {
    let (lo, hi) = crate::kafka::wanted(api);
    for v in lo..=hi {
        let m = m(v);
        let mut buf = BytesMut::new();
        m.encode(&mut buf, v)
            .unwrap_or_else(|e| panic!("{api:?} v{v} encodes: {e}"));
        assert_eq!(walk(api, v, &buf), Ok(0), "{api:?} v{v}");
        let back = M::decode(&mut Bytes::from(buf.to_vec()), v).unwrap();
        assert_eq!(back, m, "{api:?} v{v}");
    }
}

#[test]
fn every_response_asked_for_walks_as_it_decodes() {
    passes(ApiKey::ApiVersions, |_| {
        ApiVersionsResponse::default().with_api_keys(vec![
            api_versions_response::ApiVersion::default().with_max_version(3),
        ])
    });
    passes(ApiKey::Metadata, |v| {
        let partition = metadata_response::MetadataResponsePartition::default()
            .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
            .with_isr_nodes(vec![BrokerId(1)])
            .with_offline_replicas(if v >= 5 { vec![BrokerId(3)] } else { vec![] });
        MetadataResponse::default()
            .with_brokers(vec![
                metadata_response::MetadataResponseBroker::default()
                    .with_host(s("kafka-1"))
                    .with_rack(Some(s("a"))),
            ])
            .with_cluster_id(if v >= 2 { Some(s("c")) } else { None })
            .with_topics(vec![
                metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(topic()))
                    .with_partitions(vec![partition.clone(), partition]),
            ])
    });
    passes(ApiKey::Fetch, |v| {
        let mut p = fetch_response::PartitionData::default()
            .with_aborted_transactions(Some(vec![fetch_response::AbortedTransaction::default()]))
            .with_records(Some(Bytes::from_static(b"batch")));
        if v >= 12 {
            p = p
                .with_diverging_epoch(fetch_response::EpochEndOffset::default().with_epoch(4))
                .with_current_leader(
                    fetch_response::LeaderIdAndEpoch::default().with_leader_epoch(2),
                )
                .with_snapshot_id(fetch_response::SnapshotId::default().with_epoch(1));
            p.unknown_tagged_fields
                .insert(9, Bytes::from_static(b"later"));
        }
        FetchResponse::default().with_responses(vec![
            fetch_response::FetchableTopicResponse::default()
                .with_topic(topic())
                .with_partitions(vec![p]),
        ])
    });
    passes(ApiKey::ListOffsets, |_| {
        ListOffsetsResponse::default().with_topics(vec![
            list_offsets_response::ListOffsetsTopicResponse::default()
                .with_name(topic())
                .with_partitions(vec![
                    list_offsets_response::ListOffsetsPartitionResponse::default().with_offset(7),
                ]),
        ])
    });
    passes(ApiKey::OffsetCommit, |_| {
        OffsetCommitResponse::default().with_topics(vec![
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_commit_response::OffsetCommitResponsePartition::default(),
                ]),
        ])
    });
    passes(ApiKey::OffsetFetch, |_| {
        OffsetFetchResponse::default().with_topics(vec![
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_fetch_response::OffsetFetchResponsePartition::default()
                        .with_committed_offset(42)
                        .with_metadata(Some(s("m"))),
                ]),
        ])
    });
    passes(ApiKey::FindCoordinator, |v| {
        let r = FindCoordinatorResponse::default().with_host(s("kafka-1"));
        if v >= 1 {
            r.with_error_message(Some(s("none")))
        } else {
            r
        }
    });
    passes(ApiKey::Produce, |v| {
        let mut p = produce_response::PartitionProduceResponse::default().with_base_offset(5);
        if v >= 8 {
            p = p
                .with_record_errors(vec![
                    produce_response::BatchIndexAndErrorMessage::default()
                        .with_batch_index_error_message(Some(s("bad"))),
                ])
                .with_error_message(Some(s("e")));
        }
        ProduceResponse::default().with_responses(vec![
            produce_response::TopicProduceResponse::default()
                .with_name(topic())
                .with_partition_responses(vec![p]),
        ])
    });
    passes(ApiKey::SaslHandshake, |_| {
        SaslHandshakeResponse::default().with_mechanisms(vec![s("PLAIN"), s("SCRAM-SHA-512")])
    });
    passes(ApiKey::SaslAuthenticate, |_| {
        SaslAuthenticateResponse::default()
            .with_error_message(Some(s("no")))
            .with_auth_bytes(Bytes::from_static(b"r=abc"))
    });
}

#[test]
fn a_count_larger_than_what_follows_is_refused_before_decoding() {
    // Metadata v3: throttle, then two billion brokers in six bytes (the fuzzer's find).
    let body = [0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0];
    let e = check(ApiKey::Metadata, 3, &body).unwrap_err();
    assert!(e.contains("2147483647 elements"), "{e}");
    // Flexible: a compact count (varint) of the same.
    let e = check(
        ApiKey::Metadata,
        12,
        &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07],
    )
    .unwrap_err();
    assert!(e.contains("elements announced"), "{e}");
    // A string longer than the frame, a frame cut in a varint, a version not asked for.
    assert!(check(ApiKey::SaslHandshake, 1, &[0, 0, 0, 0, 0, 1, 0x7f, 0xff]).is_err());
    assert!(
        check(
            ApiKey::Fetch,
            12,
            &[0; 4].iter().chain(&[0x80; 3]).copied().collect::<Vec<_>>()
        )
        .is_err()
    );
    assert!(check(ApiKey::Fetch, 13, &[]).is_err());
    // And through the decoder's entry point.
    let mut frame = vec![0, 0, 0, 9];
    frame.extend_from_slice(&body);
    let e = crate::kafka::decode_response::<MetadataRequest>(Bytes::from(frame), 3, 9).unwrap_err();
    assert!(e.to_string().contains("elements announced"), "{e}");
}
